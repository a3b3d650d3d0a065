"""The OpenSSH argv for a chain of hops: nested ProxyCommands, % escaping, forwards, errors naming the hop."""
from __future__ import annotations

import re
import shlex

import pytest

from labhop.ssh.openssh import (AuthRefused, Chain, Forwards, Hop, HopUnreachable, LocalForward, LocalPortBusy,
                                 RemoteForward, SshFailure, diagnose, explain_failure, forward_failure,
                                 forward_host, hop_options, tunnel_argv)

DOOR = Hop("doorkeeper", "doorkeeper.example.edu", "203.0.113.5", "ada", 22, ("/keys/door",))
LOGIN = Hop("login2", "login2", "10.0.0.2", "ada", 2222, ("/keys/login",), connect_timeout=7)
INTERNAL = Hop("internal", "10.1.2.3", "10.1.2.3", "ada", 22, ("/keys/internal", "/keys/internal"),
               host_key_options=("-o", "UserKnownHostsFile=/kh", "-o", "StrictHostKeyChecking=yes"))


def expand(template: str, host: str, port: int) -> str:
    """OpenSSH's token expansion for ProxyCommand: %h, %p, %% (the only ones used here)."""
    return re.sub(r"%([%hp])", lambda m: {"%": "%", "h": host, "p": str(port)}[m.group(1)], template)


def option(argv: list[str], name: str) -> str:
    values = [argv[i + 1].split("=", 1)[1] for i, a in enumerate(argv[:-1])
              if a == "-o" and argv[i + 1].startswith(name + "=")]
    assert len(values) == 1, (name, argv)
    return values[0]


def follow(argv: list[str], chain: Chain) -> list[tuple[str, list[str]]]:
    """Walk the chain the way ssh would: each level expands its ProxyCommand and runs it."""
    seen = []
    hop_index = len(chain.hops) - 1
    while True:
        seen.append((argv[-1], argv))
        proxy = option(argv, "ProxyCommand")
        if proxy == "none":
            return seen
        hop = chain.hops[hop_index]
        argv = shlex.split(expand(proxy, hop.hostname, hop.port))
        hop_index -= 1
        if argv[0] != "ssh":  # the user's own ProxyCommand: where the walk ends
            seen.append((argv[0], argv))
            return seen


def test_single_hop_connects_directly_with_everything_fabric_resolved() -> None:
    chain = Chain((INTERNAL,), config_file="/cfg/ssh_config")
    argv = tunnel_argv(chain, Forwards(local=(LocalForward("127.0.0.1", 9999, "127.0.0.1", 8888),)))
    assert argv[0] == "ssh" and argv[-1] == "10.1.2.3"
    assert argv[argv.index("-F") + 1] == "/cfg/ssh_config"
    assert argv[argv.index("-l") + 1] == "ada" and argv[argv.index("-p") + 1] == "22"
    assert argv.count("-i") == 1, "a key named twice is passed once"
    assert argv[argv.index("-L") + 1] == "127.0.0.1:9999:127.0.0.1:8888"
    for opt in ("ExitOnForwardFailure=yes", "BatchMode=yes", "ServerAliveInterval=15", "ControlPath=none",
                "StrictHostKeyChecking=yes", "UserKnownHostsFile=/kh"):
        assert opt in argv
    # Fabric connected directly: OpenSSH must not take a ProxyJump from the config on its own.
    assert option(argv, "ProxyCommand") == "none"
    assert "-N" in argv and "-n" in argv


def test_two_hops_nest_the_jump_host_as_proxycommand_with_its_own_user_port_and_key() -> None:
    chain = Chain((DOOR, INTERNAL), config_file="/cfg/ssh_config")
    argv = tunnel_argv(chain, Forwards(local=(LocalForward("127.0.0.1", 8888, "127.0.0.1", 8888),)))
    levels = follow(argv, chain)
    assert [dest for dest, _ in levels] == ["10.1.2.3", "doorkeeper.example.edu"]
    jump_argv = levels[1][1]
    assert jump_argv[jump_argv.index("-W") + 1] == "[10.1.2.3]:22", "the jump forwards to the target"
    assert jump_argv[jump_argv.index("-i") + 1] == "/keys/door"
    assert jump_argv[jump_argv.index("-F") + 1] == "/cfg/ssh_config", "fab -S applies at every hop"
    assert option(jump_argv, "HostName") == "203.0.113.5"
    assert "-L" not in jump_argv, "forwards belong to the outer ssh only"


def test_three_hops_escape_percent_once_per_level() -> None:
    odd = Hop("odd", "odd", "fe80::1%eth0", "bob", 22)  # a literal % in a HostName must survive
    chain = Chain((DOOR, LOGIN, odd))
    argv = tunnel_argv(chain, Forwards(remote=(RemoteForward(52698, "127.0.0.1", 52698),)))
    levels = follow(argv, chain)
    assert [dest for dest, _ in levels] == ["odd", "login2", "doorkeeper.example.edu"]
    (_, target), (_, login), (_, door) = levels
    assert option(target, "HostName") == "fe80::1%%eth0"  # ssh turns %% into %
    assert login[login.index("-W") + 1] == "[fe80::1%eth0]:22"
    assert door[door.index("-W") + 1] == "[10.0.0.2]:2222"
    assert option(login, "ConnectTimeout") == "7"
    assert target[target.index("-R") + 1] == "52698:127.0.0.1:52698"


def test_a_proxycommand_from_ssh_config_stays_in_front_of_the_outermost_hop() -> None:
    bastion = Hop("door", "door", "203.0.113.5", "ada", 22, proxy_command="nc -X 5 -x socks:1080 203.0.113.5 22 # 100%")
    chain = Chain((bastion, INTERNAL))
    levels = follow(tunnel_argv(chain, Forwards(remote=(RemoteForward(1, "127.0.0.1", 2),))), chain)
    assert [dest for dest, _ in levels] == ["10.1.2.3", "door", "nc"]
    # The outermost hop keeps the user's own ProxyCommand, literally (ssh turns %% back into %).
    assert levels[2][1] == ["nc", "-X", "5", "-x", "socks:1080", "203.0.113.5", "22", "#", "100%"]


def test_forward_specs_bracket_ipv6_and_a_tunnel_needs_a_forward() -> None:
    assert LocalForward("::1", 8888, "::1", 8888).spec() == "[::1]:8888:[::1]:8888"
    assert LocalForward("0.0.0.0", 9999, "127.0.0.1", 8888).spec() == "0.0.0.0:9999:127.0.0.1:8888"
    with pytest.raises(ValueError):
        tunnel_argv(Chain((INTERNAL,)), Forwards())


def test_hop_options_leave_host_key_checking_to_the_caller() -> None:
    plain = hop_options(DOOR, Chain((DOOR,)), "none")
    assert not any(a.startswith("StrictHostKeyChecking") for a in plain)


@pytest.mark.parametrize("ip, host", [("0.0.0.0", "127.0.0.1"), ("127.0.0.1", "127.0.0.1"), ("::", "::1"),
                                      ("10.0.0.5", "10.0.0.5")])
def test_forward_host(ip: str, host: str) -> None:
    assert forward_host(ip) == host


CHAIN = Chain((DOOR, LOGIN, INTERNAL))


@pytest.mark.parametrize("stderr, expected", [
    ("ssh: connect to host 203.0.113.5 port 22: Connection timed out\r\n",
     "jump host 1 of 2 doorkeeper (ada@203.0.113.5:22): Connection timed out"),
    ("ssh: connect to host 10.0.0.2 port 2222: Connection refused\n",
     "doorkeeper cannot reach jump host 2 of 2 login2 (ada@10.0.0.2:2222): Connection refused"),
    ("ada@10.0.0.2: Permission denied (publickey).\nConnection closed by UNKNOWN port 65535\n",
     "jump host 2 of 2 login2 (ada@10.0.0.2:2222): SSH key refused (Permission denied (publickey))"),
    ("ada@10.1.2.3: Permission denied (publickey,password).\n",
     "target internal (ada@10.1.2.3:22): SSH key refused (Permission denied (publickey,password))"),
    ("ssh: Could not resolve hostname doorkeeper.example.edu: Name or service not known\n",
     "jump host 1 of 2 doorkeeper (ada@203.0.113.5:22): cannot resolve host name (Name or service not known)"),
    ("No ED25519 host key is known for [10.0.0.2]:2222 and you have requested strict checking.\n"
     "Host key verification failed.\n",
     "jump host 2 of 2 login2 (ada@10.0.0.2:2222): host key unknown and strict checking is on"),
    ("bind [127.0.0.1]:8888: Address already in use\nchannel_setup_fwd_listener_tcpip: cannot listen to port: 8888\n"
     "Could not request local forwarding.\n",
     "local port 8888 on 127.0.0.1 is busy here: Address already in use"),
    ("Error: remote port forwarding failed for listen port 52698\n",
     "the server refused to listen on its port 52698"),
    ("channel 0: open failed: connect failed: Connection refused\nstdio forwarding failed\n"
     "kex_exchange_identification: Connection closed by remote host\n",
     "a jump host could not connect to the next hop on this machine -> doorkeeper -> login2 -> internal: "
     "Connection refused"),
    ("", "ssh to internal (ada@10.1.2.3:22) failed: ssh exited without a message"),
])
def test_explain_failure_names_the_hop(stderr: str, expected: str) -> None:
    line = explain_failure(stderr, CHAIN)
    assert expected in line
    assert "\n" not in line


@pytest.mark.parametrize("stderr, kind, fields", [
    ("bind [127.0.0.1]:8888: Address already in use\n", LocalPortBusy, {"port": 8888}),
    ("bind [::1]:9000: Address already in use\n", LocalPortBusy, {"port": 9000}),
    ("ada@10.0.0.2: Permission denied (publickey).\n", AuthRefused, {"hop": 1}),
    ("ada@10.1.2.3: Permission denied (publickey,password).\n", AuthRefused, {"hop": 2}),
    ("ssh: connect to host 10.0.0.2 port 2222: Connection refused\n", HopUnreachable, {"hop": 1}),
    ("ssh: connect to host 203.0.113.5 port 22: No route to host\n", HopUnreachable, {"hop": 0}),
    ("ssh: Could not resolve hostname doorkeeper.example.edu: Name or service not known\n", HopUnreachable,
     {"hop": 0}),
    ("channel 0: open failed: connect failed: Connection refused\nstdio forwarding failed\n", HopUnreachable,
     {"hop": None}),
    ("Error: remote port forwarding failed for listen port 52698\n", SshFailure, {}),
    ("Host key verification failed.\n", SshFailure, {}),
    ("", SshFailure, {}),
])
def test_diagnose_types_the_failures_callers_act_on(stderr: str, kind: type, fields: dict) -> None:
    failure = diagnose(stderr, CHAIN)
    assert type(failure) is kind
    assert {name: getattr(failure, name) for name in fields} == fields
    assert str(failure) == failure.message == explain_failure(stderr, CHAIN)


def test_forward_failure_reports_the_far_side_reason() -> None:
    log = "channel 2: open failed: connect failed: Connection refused\n"
    assert forward_failure(log) == "Connection refused"
    assert forward_failure("all good\n") is None


def test_what_ssh_config_says_is_left_to_ssh_reading_the_same_file() -> None:
    """A HostName on ssh's command line would change what `Match host` / `Match exec "... %h"` see."""
    hop = Hop("target", "target", "10.1.2.3", "ada", 2222, ("/keys/cli", "/keys/from_config"),
              from_config=frozenset({"hostname", "user", "port"}), config_identity_files=("/keys/from_config",))
    argv = hop_options(hop, Chain((hop,), config_file="/cfg/ssh_config"), "none")
    assert "-l" not in argv and "-p" not in argv and not any(a.startswith("HostName=") for a in argv)
    assert argv.count("-i") == 1 and argv[argv.index("-i") + 1] == "/keys/cli"  # e.g. an inventory key
    assert argv[argv.index("-F") + 1] == "/cfg/ssh_config" and option(argv, "ProxyCommand") == "none"
    pinned = hop_options(Hop("t", "t", "10.1.2.3", "ada", 2222, from_config=frozenset({"user"})), Chain(()), "none")
    assert "-l" not in pinned and pinned[pinned.index("-p") + 1] == "2222" and option(pinned, "HostName") == "10.1.2.3"


def test_from_config_tells_ssh_config_values_from_given_ones(tmp_path) -> None:
    from fabric import Config, Connection

    from labhop.ssh.connect import from_config

    cfg = tmp_path / "ssh_config"
    cfg.write_text("Match host target\n    IdentityFile /keys/m\nHost target\n    HostName 10.9.9.9\n"
                   "    Port 2200\n    User ada\n")
    config = Config(runtime_ssh_path=str(cfg))
    config.load_ssh_config()
    assert from_config(Connection("target", config=config)) == {"hostname", "user", "port"}
    assert from_config(Connection("bob@target:2201", config=config)) == {"hostname"}  # -H user@host:port wins
    assert Connection("target", config=config).ssh_config["identityfile"] == ["/keys/m"]
