"""OpenSSH masters (tasks/ssh/master.py), the tunnel's holder (tasks/tunnel/hold.py): names, argv, and the one line
for each way a login fails. The real thing runs in tests/integration/test_second_factor.py."""
from __future__ import annotations

import os
import shlex
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from labhop.errors import LabhopError, UsageError
from labhop.ssh import master
from labhop.ssh.master import LoginNeeded, Masters, can_prompt, control_dir, hop_key, login_failure, persist_value
from labhop.ssh.openssh import Chain, Hop
from labhop.tunnel import hold, supervise
from tests.support import need

BASTION = Hop("bastion", "bastion", "192.0.2.1", "ada", 22, ("/keys/a",),
              host_key_options=("-o", "UserKnownHostsFile=/kh", "-o", "StrictHostKeyChecking=yes"))
NODE = Hop("node7", "node7", "10.0.0.7", "ada", 2222, ("/keys/a", "/keys/a"), host_key_mode="ask")
CHAIN = Chain(hops=(BASTION, NODE), config_file="/cfg")


def env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_STATE_HOME": str(tmp_path / "s"), "HOME": str(tmp_path)}


def test_socket_names_are_short_stable_and_differ_by_route_and_trust(tmp_path: Path) -> None:
    assert hop_key(CHAIN, 0) == hop_key(Chain(hops=(BASTION,), config_file="/cfg"), 0)  # same bastion, any target
    assert len(hop_key(CHAIN, 1)) == 16 and hop_key(CHAIN, 1) != hop_key(CHAIN, 0)
    assert hop_key(CHAIN, 1) != hop_key(Chain(hops=(BASTION, NODE), config_file="/other"), 1)
    other_trust = Hop("bastion", "bastion", "192.0.2.1", "ada", 22, ("/keys/a",),
                      host_key_options=("-o", "UserKnownHostsFile=/elsewhere"))
    assert hop_key(Chain(hops=(other_trust,), config_file="/cfg"), 0) != hop_key(CHAIN, 0)
    once = Hop("node7", "node7", "10.0.0.7", "ada", 2222, ("/keys/a",), host_key_mode="ask")
    assert hop_key(Chain(hops=(BASTION, once), config_file="/cfg"), 1) == hop_key(CHAIN, 1)  # a key listed twice


def test_control_dir_is_private_and_short_enough_for_a_socket(tmp_path: Path) -> None:
    short_base = Path(tempfile.mkdtemp(prefix="lh", dir="/tmp"))
    try:
        made = control_dir({"XDG_STATE_HOME": str(short_base)})
        assert made == short_base / "labhop" / "cm"
        assert stat.S_IMODE(made.stat().st_mode) == 0o700
    finally:
        shutil.rmtree(short_base)
    deep = tmp_path / ("d" * 90)
    short = control_dir({"XDG_STATE_HOME": str(deep)})
    assert len(str(short / ("x" * 16))) + 17 < 104 and stat.S_IMODE(short.stat().st_mode) == 0o700
    assert short != control_dir({"XDG_STATE_HOME": str(deep) + "2"})  # one per state dir


def test_a_live_master_is_a_socket_that_accepts(tmp_path: Path) -> None:
    path = str(tmp_path / "sock")
    assert not master.is_live(path)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)
        assert master.is_live(path)


def test_start_argv_chains_through_the_jump_hosts_master(tmp_path: Path) -> None:
    masters = Masters(CHAIN, environ=env(tmp_path))
    first = masters.start_argv(0, None, interactive=False)
    assert first[:3] == ["ssh", "-f", "-N"] and first[-1] == "bastion"
    assert f"ControlPath={masters.path_for(0)}" in first and "ControlPersist=10h" in first
    assert "ProxyCommand=none" in first and "BatchMode=no" not in first
    second = masters.start_argv(1, masters.own(0), interactive=True)
    proxy = next(a.split("=", 1)[1] for a in second if a.startswith("ProxyCommand="))
    words = shlex.split(proxy)
    assert words[:2] == ["ssh", "-F"] and words[words.index("-S") + 1] == masters.path_for(0)
    assert "ControlMaster=no" in words and words[-3:] == ["-W", "[%h]:%p", "bastion"]
    # a terminal (or askpass) may answer: BatchMode off before hop_options' BatchMode=yes (the first value wins)
    assert second.index("BatchMode=no") < second.index("BatchMode=yes")
    assert "StrictHostKeyChecking=ask" in second  # "ask" in ssh_config: ssh asks on the terminal


def test_client_argv_never_logs_in_by_itself(tmp_path: Path) -> None:
    argv = Masters(CHAIN, environ=env(tmp_path)).own(1).client_argv("-T")
    assert ["-o", "ControlMaster=no"] == argv[argv.index("ControlMaster=no") - 1:argv.index("ControlMaster=no") + 1]
    assert "ProxyCommand=false" in argv and "BatchMode=yes" in argv and argv[-2:] == ["-T", "node7"]


def test_persist_values(monkeypatch: pytest.MonkeyPatch) -> None:
    assert persist_value(None, {}) == "10h"
    assert persist_value("90m", {}) == "90m" and persist_value(None, {"LABHOP_LOGIN_PERSIST": "1h30m"}) == "1h30m"
    for bad in ("no", "soon", "10 h"):
        with pytest.raises(LabhopError, match="login_persist"):
            persist_value(bad, {})


def test_can_prompt_with_askpass_forced() -> None:
    assert can_prompt({"SSH_ASKPASS": "/bin/askpass", "SSH_ASKPASS_REQUIRE": "force"})
    if not os.path.exists("/dev/tty") or not _tty():
        assert not can_prompt({})
        assert not can_prompt({"SSH_ASKPASS": "/bin/askpass"})  # ssh would not use it without DISPLAY or force


def _tty() -> bool:
    try:
        os.close(os.open("/dev/tty", os.O_RDWR))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("stderr, index, interactive, kind, words", [
    ("ada@10.0.0.7: Permission denied (keyboard-interactive).", 1, False, LoginNeeded,
     ["target node7 (ada@10.0.0.7:2222) needs a login", "keyboard-interactive", "`fab -H node7 login`"]),
    ("ada@192.0.2.1: Permission denied (publickey).", 0, False, LabhopError,
     ["jump host 1 of 1 bastion", "SSH authentication failed: no key offered was accepted (Permission denied"]),
    ("ssh: Could not resolve hostname bastion: Name or service not known", 0, False, UsageError,
     ["jump host 1 of 1 bastion", "cannot resolve host name (Name or service not known)"]),
    ("ssh: Could not resolve hostname bastion: Temporary failure in name resolution", 0, False, LabhopError,
     ["cannot resolve host name (Temporary failure in name resolution)"]),
    ("ada@192.0.2.1: Permission denied (keyboard-interactive).", 0, True, LabhopError,
     ["jump host 1 of 1 bastion", "SSH authentication failed"]),  # asked, and the answer was wrong
    ("ssh: connect to host 192.0.2.1 port 22: Connection refused", 0, False, LabhopError,
     ["jump host 1 of 1 bastion (ada@192.0.2.1:22): cannot connect to 192.0.2.1:22: Connection refused"]),
    ("channel 0: open failed: connect failed: Connection refused\nstdio forwarding failed\n"
     "kex_exchange_identification: Connection closed by remote host\nConnection closed by UNKNOWN port 65535", 1,
     False, LabhopError, ["bastion cannot reach target node7", "could not connect (Connection refused)"]),
    ("@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nThe fingerprint for the ED25519 key sent by "
     "the remote host is\nSHA256:abc.\nOffending ED25519 key in /kh:3\nHost key verification failed.", 0, False,
     LabhopError, ["jump host 1 of 1 bastion", "host key of 192.0.2.1 has CHANGED", "ED25519 key SHA256:abc", "/kh:3"]),
    ("@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\nThe fingerprint for the ED25519 key sent by "
     "the remote host is\r\nSHA256:abc.\r\nOffending ED25519 key "
     "in /kh:3\r\nHost key for 192.0.2.1 has changed and you have requested strict checking.\r\n", 0, False,
     LabhopError, ["has CHANGED: it offers ED25519 key SHA256:abc, /kh:3 has another"]),  # as ssh writes it: CRLF
    ("ada@localhost: Permission denied (gssapi-with-mic).", 1, False, LabhopError,
     ["target node7", "no Kerberos ticket was accepted (`klist`", "(Permission denied (gssapi-with-mic))"]),
    ("No ED25519 host key is known for [10.0.0.7]:2222 and you have requested strict checking.", 1, False,
     LabhopError, ["host key of [10.0.0.7]:2222 is unknown", "StrictHostKeyChecking is ask and there is no terminal"]),
])
def test_each_failed_login_is_one_line_at_its_hop(stderr: str, index: int, interactive: bool, kind: type,
                                                  words: list[str]) -> None:
    error = login_failure(stderr, CHAIN, index, interactive=interactive)
    assert type(error) is kind and "\n" not in str(error)
    for word in words:
        assert word in str(error), str(error)


def test_hold_says_a_refused_forward_as_ssh_would() -> None:
    said = hold._as_ssh_says("mux_client_forward: forwarding request failed: Port forwarding failed",
                             ["-L", "127.0.0.1:8888:127.0.0.1:8888", "-R", "52698:127.0.0.1:52698"])
    assert said.startswith("bind [127.0.0.1]:8888: Address already in use")
    assert hold._as_ssh_says("x", ["-L", "[::1]:9000:[::1]:8888"]).startswith("bind [::1]:9000:")
    assert "remote port forwarding failed for listen port 52698" in hold._as_ssh_says("x", ["-R", "52698:h:1"])
    assert hold.needs_person("root@h: Permission denied (keyboard-interactive).")
    assert not hold.needs_person("root@h: Permission denied (publickey).")


def test_status_says_login_needed_for_a_supervised_tunnel() -> None:
    line = supervise.describe({"state": "login needed", "since": 100.0}, now=160.0)
    assert "login needed" in line and "60s ago" in line and "login" in line


def test_paramikos_second_factor_fallback_refuses_without_a_terminal() -> None:
    from labhop.ssh.tcp import SECOND_FACTOR_WAIT, PromptTransport

    need(not _tty(), "a controlling terminal is open: the prompt would go there")
    left, right = socket.socketpair()
    with left, right:
        transport = PromptTransport(left)
        assert transport.auth_timeout == SECOND_FACTOR_WAIT
        with pytest.raises(LabhopError, match="more than a key .* no terminal to ask on"):
            transport.auth_interactive_dumb("ada")


def test_transport_choice_and_when_openssh_cannot_share(tmp_path: Path) -> None:
    base = env(tmp_path)
    assert master.transport_choice(base) == "auto"
    assert master.transport_choice({**base, "LABHOP_TRANSPORT": " OpenSSH "}) == "openssh"
    with pytest.raises(UsageError, match="LABHOP_TRANSPORT.*'putty' is not one of auto, openssh, paramiko"):
        master.transport_choice({**base, "LABHOP_TRANSPORT": "putty"})
    assert master.transport_available({**base, "LABHOP_TRANSPORT": "paramiko"}) == "$LABHOP_TRANSPORT=paramiko"
    no_ssh = {**base, "PATH": str(tmp_path / "empty")}
    assert master.transport_available(no_ssh) == "no ssh client on PATH"
    with pytest.raises(LabhopError, match="openssh, but OpenSSH cannot share connections here: no ssh client"):
        master.transport_available({**no_ssh, "LABHOP_TRANSPORT": "openssh"})
    if shutil.which("ssh"):
        assert master.transport_available(base) is None


def test_a_control_dir_that_takes_no_socket_is_said_before_any_login(tmp_path: Path) -> None:
    assert master.sockets_unavailable(tmp_path) is None and list(tmp_path.iterdir()) == []  # the probe is gone
    missing = tmp_path / "gone"
    why = master.sockets_unavailable(missing)
    assert why is not None and why.startswith(f"ControlMaster cannot make its socket in {missing}: ")
    short_base = Path(tempfile.mkdtemp(prefix="lh", dir="/tmp"))  # short enough to be used as it is
    try:
        (short_base / "f").write_text("not a directory")
        with pytest.raises(master.SharingUnavailable, match="cannot make .* for the control sockets"):
            control_dir({"XDG_STATE_HOME": str(short_base / "f"), "HOME": str(short_base)})
    finally:
        shutil.rmtree(short_base)
    error = login_failure("unix_listener: cannot bind to path /s/abc.XYZ: Read-only file system", CHAIN, 1,
                          interactive=False)
    assert isinstance(error, master.SharingUnavailable) and "\n" not in str(error)
    assert "target node7" in str(error) and "Read-only file system" in str(error)


def test_a_target_with_one_session_per_connection_is_remembered(tmp_path: Path) -> None:
    said: list[str] = []
    masters = Masters(CHAIN, environ=env(tmp_path), say=said.append)
    assert not masters.one_session and not masters.busy
    with masters.session():
        assert masters.busy
    assert not masters.busy
    masters.remember_one_session()
    masters.remember_one_session()
    assert len(said) == 1 and "node7: its sshd allows one session per connection (MaxSessions 1)" in said[0]
    assert stat.S_IMODE(masters.facts_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(masters.facts_path.parent.stat().st_mode) == 0o700
    later = Masters(CHAIN, environ=env(tmp_path), say=said.append)
    assert later.one_session and len(said) == 1  # read back, not said again
    other = Masters(Chain(hops=(BASTION,), config_file="/cfg"), environ=env(tmp_path), say=said.append)
    assert not other.one_session  # per target (and route)
    assert not later.in_solo


def test_second_factor_wait_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    from labhop.ssh.tcp import SECOND_FACTOR_WAIT, second_factor_wait

    monkeypatch.delenv("LABHOP_SECOND_FACTOR_WAIT", raising=False)
    assert second_factor_wait() == SECOND_FACTOR_WAIT == 300.0
    monkeypatch.setenv("LABHOP_SECOND_FACTOR_WAIT", "900")
    assert second_factor_wait() == 900.0
    for bad in ("0", "-5", "soon", "1e9"):
        monkeypatch.setenv("LABHOP_SECOND_FACTOR_WAIT", bad)
        with pytest.raises(UsageError, match="LABHOP_SECOND_FACTOR_WAIT"):
            second_factor_wait()


def test_a_refused_commands_input_is_sent_again_from_its_start() -> None:
    import io

    from labhop.executor import _HoldOpen, payload
    from labhop.ssh.runner import _rewind

    stream = payload("abc")
    assert stream.read() == "abc"
    _rewind(stream)
    assert stream.read() == "abc"
    held = _HoldOpen("probe")
    assert held.read() == "probe" and held.read() is None
    _rewind(held)
    assert held.read() == "probe"
    _rewind(False)
    _rewind(None)
    with pytest.raises(LabhopError, match="cannot be sent twice"):
        _rewind(iter([io.StringIO()]))


def test_an_unknown_key_where_known_hosts_trusts_a_ca_says_the_certificate_is_missing(tmp_path) -> None:
    """ssh falls back to the plain key when the host shows no certificate from a trusted CA: say that."""
    import dataclasses

    known = tmp_path / "known hosts"
    known.write_text("# site CA\n@cert-authority *.example.edu,[10.0.0.*]:2222 ssh-ed25519 AAAAC3Nza\n")
    node = dataclasses.replace(NODE, host_key_options=("-o", f'UserKnownHostsFile="{known}"', "-o",
                                                       "GlobalKnownHostsFile=/dev/null"))
    chain = Chain(hops=(BASTION, node))
    stderr = "No ED25519 host key is known for [10.0.0.7]:2222 and you have requested strict checking.\r\n"
    error = str(login_failure(stderr, chain, 1, interactive=False))
    assert f"{known}:2 trusts a certificate authority for it" in error and "no certificate that CA signed" in error
    other = "No ED25519 host key is known for [10.9.9.9]:2222 and you have requested strict checking."
    assert "certificate authority" not in str(login_failure(other, chain, 1, interactive=False))
