"""known_hosts reading and the host key decisions, without a network (real paramiko keys)."""
from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import paramiko
import pytest
from fabric import Config, Connection

from labhop.ssh.hostkeys import (HostKeyCheck, HostKeyError, VerifyingPolicy, fingerprint, hashed_name, host_matches,
                            judge, load_known_hosts, openssh_options, parse_known_hosts, secure)


def make_key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


def line(name: str, key: paramiko.PKey) -> str:
    return f"{name} {key.get_name()} {key.get_base64()}\n"


def check(tmp_path: Path, strict: str = "yes", *, name: str = "[10.0.0.5]:2222", hash_new: bool = False,
          batch: bool = False) -> HostKeyCheck:
    return HostKeyCheck(host="nb1", name=name, strict=strict, user_files=(str(tmp_path / "known_hosts"),),
                        global_files=(str(tmp_path / "global"),), hash_new=hash_new, batch=batch)


@pytest.mark.parametrize("patterns, name, expected", [
    ("nb1", "nb1", True),
    ("NB1", "nb1", True),
    ("nb1,nb2", "nb2", True),
    ("nb1", "nb10", False),
    ("[10.0.0.5]:2222", "[10.0.0.5]:2222", True),
    ("10.0.0.5", "[10.0.0.5]:2222", False),  # a port-22 entry does not cover another port
    ("*.lab.example", "gpu.lab.example", True),
    ("*.lab.example,!evil.lab.example", "evil.lab.example", False),
    ("gpu?.lab.example", "gpu1.lab.example", True),
    ("[*.lab.example]:2222", "[gpu.lab.example]:2222", True),
])
def test_host_patterns(patterns: str, name: str, expected: bool) -> None:
    assert host_matches(patterns, name) is expected


def test_hashed_names_match_like_ssh_keygen_writes_them(tmp_path: Path) -> None:
    hashed = hashed_name("[10.0.0.5]:2222")
    assert hashed.startswith("|1|")
    assert host_matches(hashed, "[10.0.0.5]:2222") and not host_matches(hashed, "[10.0.0.5]:2223")
    # and the real thing: ssh-keygen -H hashes a file we wrote in plain text
    key = make_key()
    known = tmp_path / "kh"
    known.write_text(line("[gpu.lab]:2200", key))
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    entries = load_known_hosts([str(known)])
    assert entries[0].hosts.startswith("|1|")
    assert judge(entries, "[gpu.lab]:2200", key.get_name(), key.asbytes()).kind == "known"


def test_parse_skips_what_it_cannot_use_and_keeps_markers() -> None:
    key = make_key()
    text = ("# comment\n\n" + "garbage\n" + "nb1 ssh-ed25519 !!notbase64!!\n" + line("nb1", key)
            + "@revoked * " + line("", key).strip() + "\n" + "@cert-authority *.lab " + line("", key).strip() + "\n")
    entries = parse_known_hosts(text, "f")
    assert [(e.line, e.marker) for e in entries] == [(5, None), (6, "@revoked"), (7, "@cert-authority")]


def test_verdicts(tmp_path: Path) -> None:
    key, other, rsa = make_key(), make_key(), paramiko.RSAKey.generate(1024)
    entries = parse_known_hosts(line("nb1", key) + line("nb2", rsa), "kh")
    assert judge(entries, "nb1", key.get_name(), key.asbytes()).kind == "known"
    changed = judge(entries, "nb1", other.get_name(), other.asbytes())
    assert changed.kind == "changed" and changed.entry.line == 1
    # a type not known for the host is new (ssh's HOST_NEW), with the known types said
    new_type = judge(entries, "nb2", key.get_name(), key.asbytes())
    assert new_type.kind == "unknown" and new_type.other_types == ("ssh-rsa",)
    assert judge(entries, "nb3", key.get_name(), key.asbytes()).kind == "unknown"
    revoked = parse_known_hosts(line("nb1", key) + "@revoked * " + line("", key).strip() + "\n", "kh")
    assert judge(revoked, "nb1", key.get_name(), key.asbytes()).kind == "revoked"


def test_changed_key_is_refused_in_every_mode_with_one_line_naming_the_host(tmp_path: Path) -> None:
    old, new = make_key(), make_key()
    (tmp_path / "known_hosts").write_text(line("[10.0.0.5]:2222", old))
    for strict in ("yes", "accept-new", "no", "ask"):
        with pytest.raises(HostKeyError) as info:
            VerifyingPolicy(check(tmp_path, strict), interactive=True, ask=lambda _: "yes").verify(
                new.get_name(), new.asbytes())
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith("host key of [10.0.0.5]:2222 has CHANGED")
        assert fingerprint(new.asbytes()) in message and f"{tmp_path / 'known_hosts'}:1" in message
    assert (tmp_path / "known_hosts").read_text() == line("[10.0.0.5]:2222", old)


def test_known_key_in_the_global_file_is_accepted(tmp_path: Path) -> None:
    key = make_key()
    (tmp_path / "global").write_text(line("[10.0.0.5]:2222", key))
    VerifyingPolicy(check(tmp_path, "yes")).verify(key.get_name(), key.asbytes())


def test_unknown_key_with_yes_is_refused_and_nothing_written(tmp_path: Path) -> None:
    key = make_key()
    with pytest.raises(HostKeyError, match=r"^host key of \[10.0.0.5\]:2222 is unknown .* "
                                           r"StrictHostKeyChecking is yes"):
        VerifyingPolicy(check(tmp_path, "yes")).verify(key.get_name(), key.asbytes())
    assert not (tmp_path / "known_hosts").exists()


def test_unknown_key_with_ask_and_no_terminal_is_refused(tmp_path: Path) -> None:
    key = make_key()
    with pytest.raises(HostKeyError, match="ask and there is no terminal"):
        VerifyingPolicy(check(tmp_path, "ask"), interactive=False).verify(key.get_name(), key.asbytes())
    asked = []
    with pytest.raises(HostKeyError, match="no terminal"):  # BatchMode never asks
        VerifyingPolicy(check(tmp_path, "ask", batch=True), interactive=True,
                        ask=lambda q: asked.append(q) or "yes").verify(key.get_name(), key.asbytes())
    assert asked == []


@pytest.mark.parametrize("answer, accepted", [("yes", True), ("no", False), ("", False), ("@fp", True)])
def test_unknown_key_with_ask_on_a_terminal(tmp_path: Path, answer: str, accepted: bool) -> None:
    key = make_key()
    questions: list[str] = []
    reply = fingerprint(key.asbytes()) if answer == "@fp" else answer
    policy = VerifyingPolicy(check(tmp_path, "ask"), interactive=True,
                             ask=lambda q: questions.append(q) or reply, say=lambda _: None)
    if accepted:
        policy.verify(key.get_name(), key.asbytes())
        assert load_known_hosts([str(tmp_path / "known_hosts")])[0].blob == key.asbytes()
    else:
        with pytest.raises(HostKeyError, match="not accepted"):
            policy.verify(key.get_name(), key.asbytes())
    assert fingerprint(key.asbytes()) in questions[0] and "nb1" in questions[0]


@pytest.mark.parametrize("hash_new", [False, True])
def test_accept_new_records_the_key_where_ssh_would_find_it(tmp_path: Path, hash_new: bool) -> None:
    key = make_key()
    said: list[str] = []
    ssh_dir = tmp_path / "fresh" / ".ssh"
    c = HostKeyCheck(host="nb1", name="[10.0.0.5]:2222", strict="accept-new",
                     user_files=(str(ssh_dir / "known_hosts"),), global_files=(), hash_new=hash_new)
    VerifyingPolicy(c, say=said.append).verify(key.get_name(), key.asbytes())
    written = (ssh_dir / "known_hosts").read_text()
    assert written.startswith("|1|") is hash_new
    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ssh_dir / "known_hosts").stat().st_mode) == 0o600
    assert "permanently added" in said[0] and "nb1" in said[0]
    # OpenSSH's own lookup finds it
    found = subprocess.run(["ssh-keygen", "-F", "[10.0.0.5]:2222", "-f", str(ssh_dir / "known_hosts")],
                           capture_output=True, text=True)
    assert found.returncode == 0 and key.get_base64() in found.stdout
    # and now it is simply known, even under yes
    VerifyingPolicy(HostKeyCheck(**{**c.__dict__, "strict": "yes"})).verify(key.get_name(), key.asbytes())


def test_settings_come_from_ssh_config_with_tokens_and_defaults(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    c = HostKeyCheck.from_ssh_config({"userknownhostsfile": f'"{tmp_path}/a b" %d/kh_%h_%p none',
                                      "stricthostkeychecking": "Accept-New", "hashknownhosts": "yes"},
                                     original_host="nb1", host="10.0.0.5", port=2222, user="ann")
    assert c.user_files == (f"{tmp_path}/a b", f"{tmp_path}/kh_10.0.0.5_2222")
    assert (c.strict, c.name, c.hash_new) == ("accept-new", "[10.0.0.5]:2222", True)
    d = HostKeyCheck.from_ssh_config({"hostkeyalias": "gpu"}, original_host="nb1", host="10.0.0.5", port=22, user="")
    assert d.strict == "ask" and d.name == "gpu"
    assert d.user_files == (f"{tmp_path}/.ssh/known_hosts", f"{tmp_path}/.ssh/known_hosts2")
    assert d.global_files == ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
    assert HostKeyCheck.from_ssh_config({"stricthostkeychecking": "off"}, original_host="x", host="x", port=22,
                                        user="").strict == "no"
    with pytest.raises(HostKeyError.__mro__[1], match="StrictHostKeyChecking 'maybe'"):
        HostKeyCheck.from_ssh_config({"stricthostkeychecking": "maybe"}, original_host="x", host="x", port=22, user="")


def test_openssh_options_say_the_same_files_and_mode(tmp_path: Path) -> None:
    c = HostKeyCheck(host="nb1", name="nb1", strict="ask", user_files=(f"{tmp_path}/a b",), global_files=())
    assert openssh_options(c) == ["-o", f'UserKnownHostsFile="{tmp_path}/a b"', "-o", "GlobalKnownHostsFile=/dev/null",
                                  "-o", "StrictHostKeyChecking=yes"]


def test_transport_prefers_the_key_types_known_for_the_host(tmp_path: Path) -> None:
    rsa = paramiko.RSAKey.generate(1024)
    (tmp_path / "known_hosts").write_text(line("[10.0.0.5]:2222", rsa))
    policy = VerifyingPolicy(check(tmp_path))
    a, b = __import__("socket").socketpair()
    try:
        transport = policy.transport_factory(a)
        assert transport.get_security_options().key_types[:2] == ("rsa-sha2-512", "rsa-sha2-256")
    finally:
        a.close()
        b.close()


def test_secure_covers_gateways_fabric_built_from_proxyjump(tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host jump\n  HostName 10.0.0.1\n  Port 2201\n  UserKnownHostsFile {tmp_path}/jump_kh\n"
                   f"  StrictHostKeyChecking accept-new\n"
                   f"Host target\n  HostName 10.0.0.2\n  ProxyJump jump\n  UserKnownHostsFile {tmp_path}/kh\n")
    config = Config(runtime_ssh_path=str(cfg))
    config.load_ssh_config()
    cxn = secure(Connection("target", config=config))
    policies = [cxn.client._policy, cxn.gateway.client._policy]
    assert all(isinstance(p, VerifyingPolicy) for p in policies)
    assert [(p.check.name, p.check.strict, p.check.user_files) for p in policies] == [
        ("10.0.0.2", "ask", (f"{tmp_path}/kh",)), ("[10.0.0.1]:2201", "accept-new", (f"{tmp_path}/jump_kh",))]
    assert "transport_factory" in cxn.gateway.connect_kwargs
    assert "transport_factory" not in config.connect_kwargs  # never leaks into the shared config
