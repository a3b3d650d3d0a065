"""The test harness itself: real sshd servers, HOME isolation, the
laptop -> jump -> target topology and its network isolation."""
from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tests.harness.sshd import free_port, start_sshd
from tests.harness.topology import (
    JUMP_NS_PREFIX,
    STATE_DIR,
    TARGET_NS_PREFIX,
    VETH_PREFIX,
    build_topology,
    cleanup_stale,
    netns_argv,
)

# The fixtures normally come from tests/conftest.py (`from tests.harness.fixtures
# import *`).  Import them here only when conftest does not provide them: a
# second definition would shadow conftest's and start a second session-scoped
# topology.
_conftest = sys.modules.get("tests.conftest")
if not all(hasattr(_conftest, n) for n in ("sshd_server", "topology")):
    from tests.harness.fixtures import sshd_server, topology  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
REAL_HOME = Path(pwd.getpwuid(os.geteuid()).pw_dir)


def ssh(cfg: Path, host: str, *command: str, timeout: float = 20, check: bool = True):
    return subprocess.run(
        ["ssh", "-F", str(cfg), host, *command],
        capture_output=True, text=True, timeout=timeout, check=check,
    )


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"  # zombie waiting for init: dead


# ---------------------------------------------------------------- one server


def test_single_server_runs_command_with_isolated_home(sshd_server):
    home = str(sshd_server.home)
    assert sshd_server.home != REAL_HOME
    marker = f"harness-marker-{os.getpid()}"
    res = sshd_server.run(
        "echo $HOME; bash -lc 'echo $HOME'; (cd ~ && pwd); pwd; "
        f"touch {marker}; mkdir -p ~/.cache/probe"
    )
    lines = res.stdout.split()
    assert lines[:3] == [home, home, home], res.stdout
    assert (sshd_server.home / ".cache" / "probe").is_dir()
    assert not (REAL_HOME / marker).exists()
    if sshd_server.home_isolation == "passwd-bind":
        # the session even *starts* in the throwaway home, so relative paths
        # never reach the real one
        assert lines[3] == home
        assert (sshd_server.home / marker).exists()


def test_single_server_ssh_config_and_sftp(sshd_server):
    cfg = sshd_server.ssh_config
    assert "Host target" in cfg.read_text()
    res = ssh(cfg, "target", "echo", "via-config")
    assert res.stdout.strip() == "via-config"
    assert res.stderr == ""  # strict host key checking passed silently
    if sshd_server.home_isolation == "passwd-bind":
        sftp = subprocess.run(
            ["sftp", "-F", str(cfg), "-b", "-", "target"],
            input="pwd\n", capture_output=True, text=True, timeout=20, check=True,
        )
        assert str(sshd_server.home) in sftp.stdout


def test_wrong_host_key_is_rejected(sshd_server, tmp_path):
    bogus = tmp_path / "known_hosts"
    line = sshd_server.known_hosts_line.split()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    other = (tmp_path / "k.pub").read_text().split()
    bogus.write_text(f"{line[0]} {other[0]} {other[1]}\n")
    argv = sshd_server.ssh_argv("true", direct=True)
    argv[argv.index(f"UserKnownHostsFile={sshd_server.known_hosts}")] = f"UserKnownHostsFile={bogus}"
    res = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert res.returncode != 0
    assert "HOST IDENTIFICATION HAS CHANGED" in res.stderr or "verification failed" in res.stderr


def test_stop_kills_detached_session_processes_and_is_idempotent(tmp_path):
    server = start_sshd(tmp_path, "scratch")
    try:
        res = server.run("nohup setsid sleep 300 >/dev/null 2>&1 & echo $!")
        pid = int(res.stdout.strip())
        assert not _gone(pid)
    finally:
        server.stop()
    server.stop()
    deadline = time.monotonic() + 3
    while not (_gone(pid) and _gone(server.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if server.home_isolation == "passwd-bind":  # found via its mount namespace
        assert _gone(pid)
    assert _gone(server.pid)
    with pytest.raises(OSError):
        socket.create_connection((server.address, server.port), timeout=1).close()


# ------------------------------------------------------------------ topology


def test_topology_ssh_through_proxyjump(topology):
    cfg_text = topology.ssh_config.read_text()
    assert "Host jump" in cfg_text and "Host target" in cfg_text
    assert "ProxyJump jump" in cfg_text
    assert ssh(topology.ssh_config, "target", "true").returncode == 0
    res = ssh(topology.ssh_config, "target", "hostname; echo $HOME; ip -o -4 addr show")
    lines = res.stdout.splitlines()
    assert lines[0]
    assert lines[1] == str(topology.target.home)
    if topology.isolated:
        # we really landed in the target namespace
        assert f"inet {topology.target.address}/" in res.stdout
    # the known_hosts file has both host keys
    kh = topology.known_hosts.read_text()
    assert topology.jump.known_hosts_line in kh and topology.target.known_hosts_line in kh


def test_target_not_directly_reachable(topology):
    if not topology.isolated:
        pytest.skip(topology.reason)
    # positive control: the jump host is reachable from the "laptop"
    socket.create_connection((topology.jump.address, topology.jump.port), timeout=3).close()
    with pytest.raises(OSError):
        socket.create_connection((topology.target.address, topology.target.port), timeout=3).close()
    res = subprocess.run(
        topology.target.ssh_argv("true", direct=True, netns_exec=False),
        capture_output=True, text=True, timeout=20,
    )
    assert res.returncode != 0


def test_target_namespace_has_no_default_route(topology):
    if not topology.isolated:
        pytest.skip(topology.reason)
    routes = subprocess.run(
        netns_argv(topology.target_netns, "ip", "route", "show"),
        capture_output=True, text=True, check=True,
    ).stdout
    assert routes.strip(), "target should have its connected route"
    assert "default" not in routes
    assert "via" not in routes
    fwd = subprocess.run(
        netns_argv(topology.jump_netns, "sysctl", "-n", "net.ipv4.ip_forward"),
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert fwd == "0"
    # and the root namespace blocks the whole test range by an unreachable route
    got = subprocess.run(["ip", "route", "get", topology.target.address], capture_output=True, text=True)
    assert got.returncode != 0 or got.stdout.startswith("unreachable")


def test_local_forward_through_jump_to_target(topology, tmp_path):
    token = f"hello-from-target-{os.getpid()}"
    (tmp_path / "probe.txt").write_text(token)
    rport = 8765 if topology.isolated else free_port()
    lport = free_port()
    web = subprocess.Popen(
        topology.target_exec_argv(
            sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(rport),
            "--directory", str(tmp_path),
        ),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    fwd = subprocess.Popen(
        ["ssh", "-F", str(topology.ssh_config), "-N", "-o", "ExitOnForwardFailure=yes",
         "-L", f"127.0.0.1:{lport}:127.0.0.1:{rport}", "target"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        body, err = None, None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert fwd.poll() is None, fwd.stderr.read().decode()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{lport}/probe.txt", timeout=3) as r:
                    body = r.read().decode()
                break
            except OSError as exc:
                err = exc
                time.sleep(0.1)
        assert body == token, f"no answer through the tunnel: {err}"
        if topology.isolated:
            # the web server is only on the target's own loopback
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", rport), timeout=1).close()
    finally:
        for proc in (fwd, web):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def test_fabric_connection_through_topology(topology):
    fabric = pytest.importorskip("fabric")
    config = fabric.Config(runtime_ssh_path=str(topology.ssh_config))
    with fabric.Connection("target", config=config) as c:
        res = c.run("echo $HOME; ip -o -4 addr show", hide=True, in_stream=False)
        assert res.stdout.splitlines()[0] == str(topology.target.home)
        if topology.isolated:
            assert topology.target.address in res.stdout
        src = topology.workdir / "fabric-put.txt"
        src.write_text("put")
        c.put(str(src), "fabric-put.txt")  # relative: lands in the session's start dir
    if topology.target.home_isolation == "passwd-bind":
        assert (topology.target.home / "fabric-put.txt").read_text() == "put"
    assert not (REAL_HOME / "fabric-put.txt").exists()


def test_loopback_fallback_topology(tmp_path):
    topo = build_topology(tmp_path, use_netns=False)
    try:
        assert topo.isolated is False and topo.reason
        assert topo.target.netns is None and topo.target.address == "127.0.0.1"
        res = ssh(topo.ssh_config, "target", "echo $HOME")
        assert res.stdout.strip() == str(topo.target.home)
    finally:
        topo.close()
        topo.close()


def test_crashed_run_is_cleaned_up(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from tests.harness.topology import build_topology
        topo = build_topology(__import__("pathlib").Path({str(tmp_path)!r}), use_netns=True)
        print(topo.jump_netns, topo.target_netns, flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        jump_ns, target_ns = child.stdout.readline().split()
    finally:
        child.kill()  # SIGKILL: no atexit, no teardown
        child.wait(timeout=5)
    tag = jump_ns[len(JUMP_NS_PREFIX):]
    assert target_ns == TARGET_NS_PREFIX + tag
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert jump_ns in netns  # really left behind

    removed = cleanup_stale()

    assert f"netns {jump_ns}" in removed and f"netns {target_ns}" in removed
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert tag not in netns
    assert VETH_PREFIX + tag not in links
    assert not (STATE_DIR / f"{tag}.state").exists()
    # the orphaned sshds lived in the deleted namespaces and were killed
    for name in ("jump", "target"):
        pid = int((tmp_path / f"sshd-{name}" / "sshd.pid").read_text())
        deadline = time.monotonic() + 3
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(pid)
