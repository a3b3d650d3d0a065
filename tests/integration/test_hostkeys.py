"""Host keys against real sshds: labhop trusts exactly what the user's known_hosts and ssh_config say,
on every hop, and agrees with the OpenSSH client about it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support import Workspace, need, one_line_refusal

pytestmark = pytest.mark.integration


def variant(base: Path, out: Path, *, known_hosts: Path, strict: str, extra: str = "") -> Path:
    """The harness's ssh_config with another known_hosts file and StrictHostKeyChecking mode."""
    text = base.read_text()
    text = re.sub(r"(?m)^(\s*)UserKnownHostsFile .*$", lambda m: f"{m.group(1)}UserKnownHostsFile {known_hosts}", text)
    text = re.sub(r"(?m)^(\s*)StrictHostKeyChecking .*$",
                  lambda m: f"{m.group(1)}StrictHostKeyChecking {strict}" + (f"\n{m.group(1)}{extra}" if extra else ""),
                  text)
    out.write_text(text)
    return out


def other_key_line(tmp_path: Path, name: str) -> str:
    """A known_hosts line giving ``name`` an ED25519 key that is not the server's."""
    key = tmp_path / f"impostor-{abs(hash(name))}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    kind, blob = key.with_suffix(".pub").read_text().split()[:2]
    return f"{name} {kind} {blob}\n"


def workspace(root: Path, config: Path, prefix: str) -> Workspace:
    ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=config)
    ws.write_inventory(f'[defaults]\nprefix = "{prefix}"\n')
    return ws




@pytest.fixture
def direct(sshd_server, tmp_path: Path):
    server = sshd_server
    host_line = server.known_hosts_line  # "[127.0.0.1]:PORT ssh-ed25519 AAAA..."
    return server, host_line, host_line.split()[0], tmp_path


def test_a_known_key_connects(direct) -> None:
    server, host_line, name, tmp = direct
    kh = tmp / "kh"
    kh.write_text("# a comment, a stranger, then the host\n" + other_key_line(tmp, "[10.9.9.9]:22") + host_line + "\n")
    ws = workspace(tmp, variant(server.ssh_config, tmp / "cfg", known_hosts=kh, strict="yes"), "~/.labhop-hk")
    assert "not running" in ws.fab("status", host="target").ok().stdout


def test_a_hashed_known_hosts_file_works(direct) -> None:
    server, host_line, name, tmp = direct
    kh = tmp / "kh"
    kh.write_text(host_line + "\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert name not in kh.read_text() and kh.read_text().startswith("|1|")
    ws = workspace(tmp, variant(server.ssh_config, tmp / "cfg", known_hosts=kh, strict="yes"), "~/.labhop-hk")
    ws.fab("status", host="target").ok()


@pytest.mark.parametrize("strict", ["yes", "accept-new", "no"])
def test_a_changed_key_is_refused_in_one_line_naming_the_host(direct, strict: str) -> None:
    server, host_line, name, tmp = direct
    kh = tmp / "kh"
    kh.write_text(other_key_line(tmp, name))
    before = kh.read_text()
    ws = workspace(tmp, variant(server.ssh_config, tmp / "cfg", known_hosts=kh, strict=strict), "~/.labhop-hk")
    line = one_line_refusal(ws.fab("status", host="target"), "target", name, "CHANGED", f"{kh}:1")
    assert line.startswith("labhop: target")
    assert kh.read_text() == before  # nothing recorded over the old key
    # OpenSSH refuses it too: both clients read the same file. (Under "no" ssh goes on with
    # forwarding disabled; labhop needs forwarding and sends a password hash: it refuses.)
    if strict != "no":
        assert subprocess.run(["ssh", "-F", str(tmp / "cfg"), "target", "true"], capture_output=True,
                              timeout=30).returncode != 0


def test_unknown_key_with_strict_yes_is_refused_and_nothing_is_written(direct) -> None:
    server, host_line, name, tmp = direct
    kh = tmp / "kh"
    ws = workspace(tmp, variant(server.ssh_config, tmp / "cfg", known_hosts=kh, strict="yes"), "~/.labhop-hk")
    one_line_refusal(ws.fab("status", host="target"), "target", "unknown", "StrictHostKeyChecking is yes")
    assert not kh.exists()


def test_unknown_key_with_ask_and_no_terminal_is_refused(direct) -> None:
    server, host_line, name, tmp = direct
    kh = tmp / "kh"
    ws = workspace(tmp, variant(server.ssh_config, tmp / "cfg", known_hosts=kh, strict="ask"), "~/.labhop-hk")
    one_line_refusal(ws.fab("status", host="target"), "target", "no terminal")
    assert not kh.exists()


def test_unknown_key_with_accept_new_is_recorded_where_openssh_finds_it(direct) -> None:
    server, host_line, name, tmp = direct
    kh = tmp / "sub" / "kh"
    ws = workspace(tmp, variant(server.ssh_config, tmp / "cfg", known_hosts=kh, strict="accept-new"), "~/.labhop-hk")
    first = ws.fab("status", host="target").ok()
    assert "permanently added" in first.stderr and name in first.stderr
    recorded = kh.read_text().split()
    assert recorded[:3] == host_line.split()[:3]
    # now known: strict yes passes, for labhop and for the OpenSSH client
    strict = variant(server.ssh_config, tmp / "cfg-yes", known_hosts=kh, strict="yes")
    workspace(tmp, strict, "~/.labhop-hk").fab("status", host="target").ok()
    found = subprocess.run(["ssh", "-F", str(strict), "target", "true"], capture_output=True, text=True, timeout=30)
    assert found.returncode == 0, found.stderr
    assert kh.read_text().count("\n") == 1  # recorded once


def test_accept_new_with_hashknownhosts_writes_a_hashed_entry(direct) -> None:
    server, host_line, name, tmp = direct
    kh = tmp / "kh"
    cfg = variant(server.ssh_config, tmp / "cfg", known_hosts=kh, strict="accept-new", extra="HashKnownHosts yes")
    workspace(tmp, cfg, "~/.labhop-hk").fab("status", host="target").ok()
    assert kh.read_text().startswith("|1|") and name not in kh.read_text()
    found = subprocess.run(["ssh-keygen", "-F", name, "-f", str(kh)], capture_output=True, text=True)
    assert found.returncode == 0


def test_an_inventory_host_uses_the_default_known_hosts_in_home(direct) -> None:
    """A host only in inventory.toml (no ssh_config block): ~/.ssh/known_hosts and "ask"."""
    server, host_line, name, tmp = direct
    home = tmp / "home"
    (home / ".ssh").mkdir(parents=True)
    ws = Workspace(root=tmp, inventory=tmp / "inventory.toml", home=home)
    ws.write_inventory(f"""
        [hosts.gpu]
        hostname = "{server.address}"
        ssh_port = {server.port}
        user = "{server.user}"
        identity_file = "{server.identity_file}"
        prefix = "~/.labhop-hk"
    """)
    one_line_refusal(ws.fab("status", host="gpu"), "gpu", "unknown", "no terminal")
    (home / ".ssh" / "known_hosts").write_text(host_line + "\n")
    ws.fab("status", host="gpu").ok()


# -- every hop: laptop -> jump -> target ------------------------------------------------------

@pytest.fixture
def hops(topology, tmp_path: Path):
    need(topology.isolated, f"the jump topology is not isolated: {topology.reason}")
    names = {s.name: s.known_hosts_line.split()[0] for s in (topology.jump, topology.target)}
    lines = {s.name: s.known_hosts_line + "\n" for s in (topology.jump, topology.target)}
    return topology, names, lines, tmp_path


def test_through_a_jump_host_both_keys_known(hops) -> None:
    topo, names, lines, tmp = hops
    kh = tmp / "kh"
    kh.write_text(lines["jump"] + lines["target"])
    ws = workspace(tmp, variant(topo.ssh_config, tmp / "cfg", known_hosts=kh, strict="yes"), "~/.labhop-hk")
    ws.fab("status", host="target").ok()


@pytest.mark.parametrize("changed", ["jump", "target"])
def test_through_a_jump_host_a_changed_key_on_either_hop_is_refused(hops, changed: str) -> None:
    topo, names, lines, tmp = hops
    kh = tmp / "kh"
    lines = dict(lines)
    lines[changed] = other_key_line(tmp, names[changed])
    kh.write_text(lines["jump"] + lines["target"])
    ws = workspace(tmp, variant(topo.ssh_config, tmp / "cfg", known_hosts=kh, strict="accept-new"), "~/.labhop-hk")
    line = one_line_refusal(ws.fab("status", host="target"), f"host key of {names[changed]} has CHANGED")
    assert re.search(rf"\b{changed}\b.*host key of", line), line  # the hop is named by what the user calls it
    assert names["target" if changed == "jump" else "jump"] not in line


def test_through_a_jump_host_inventory_jumps_are_checked_too(hops) -> None:
    """Jumps listed in inventory.toml (not ProxyJump): the jump's unknown key is refused under yes."""
    topo, names, lines, tmp = hops
    kh = tmp / "kh"
    kh.write_text(lines["target"])  # the jump host is not known
    cfg = variant(topo.ssh_config, tmp / "cfg", known_hosts=kh, strict="yes")
    cfg.write_text(re.sub(r"(?m)^\s*ProxyJump .*\n", "", cfg.read_text()))
    ws = Workspace(root=tmp, inventory=tmp / "inventory.toml", ssh_config=cfg)
    ws.write_inventory("""
        [hosts.nb]
        hostname = "target"
        jump = ["jump"]
        prefix = "~/.labhop-hk"
    """)
    line = one_line_refusal(ws.fab("status", host="nb"), f"host key of {names['jump']} is unknown")
    assert re.search(r"\bjump\b.*host key of", line), line
    kh.write_text(lines["jump"] + lines["target"])
    ws.fab("status", host="nb").ok()
