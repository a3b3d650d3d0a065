"""The seeds' two-hop scene end to end: laptop -> jump -> target, the target unreachable directly.

Provision and serve through the jump host, then `fab tunnel` (foreground with Ctrl-C,
--background/--close, a busy local port, three hops, ProxyJump from `fab -S`, the paramiko
fallback), `fab rmate` delivering a file to an editor listening here, and one-line errors
naming the hop. Real sshds, a real JupyterLab, real HTTP and a real rmate client.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

from tests.support import FAB, REPO, Workspace, free_port, http_status, need

pytestmark = pytest.mark.integration


@dataclass
class Scene:
    ws: Workspace
    topology: object
    state: Path  # XDG_STATE_HOME on the laptop
    port: int  # JupyterLab's port on the target
    prefix: str
    bin_dir: str
    provision_out: str
    serve_out: str

    def env(self, **extra: str) -> dict[str, str]:
        return {"XDG_STATE_HOME": str(self.state), **extra}

    def fab(self, *args: str, host: str = "internal", env: Optional[dict[str, str]] = None, timeout: float = 120):
        return self.ws.fab(*args, host=host, env={**self.env(), **(env or {})}, timeout=timeout)

    def records(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in (self.state / "labhop").glob("*.json")]

    def target_run(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.topology.run("target", command, check=False, timeout=timeout)


def _kill_recorded(state: Path) -> None:
    """Whatever a failed test left open: end it (by recorded pid only)."""
    for path in (state / "labhop").glob("*.json"):
        try:
            pid = json.loads(path.read_text())["pid"]
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, KeyError):
            pass


@pytest.fixture(scope="module")
def scene(topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    need(topology.isolated or os.environ.get("LABHOP_TEST_ALLOW_LOOPBACK_TOPOLOGY") == "1",
         f"the jump topology is not isolated: {topology.reason}")
    root = tmp_path_factory.mktemp("tunnel")
    home = topology.target.home
    port = free_port()
    prefix, bin_dir = f"{home}/.labhop-tunnel", f"{home}/.local/bin-tunnel"
    ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=topology.ssh_config)
    stranger = root / "stranger_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    jump = topology.jump
    # `internal` reaches the target through an inventory jump chain; `target` (not listed here)
    # is the ssh_config alias with its own ProxyJump; [defaults] makes both mean the same server.
    ws.write_inventory(f"""
        [defaults]
        port = {port}
        prefix = "{prefix}"
        bin_dir = "{bin_dir}"

        [hosts.internal]
        hostname = "target"
        jump = ["jump"]

        # three hops: the jump host twice, the second time by address with its own key
        [hosts.three]
        hostname = "target"
        jump = ["jump", "jump-again"]

        [hosts.jump-again]
        hostname = "{jump.address}"
        ssh_port = {jump.port}
        identity_file = "{jump.identity_file}"

        # faults, each at a known hop
        [hosts.dead-jump]
        hostname = "target"
        jump = ["closed-jump"]

        [hosts.closed-jump]
        hostname = "jump"
        ssh_port = 1

        [hosts.refused-key]
        hostname = "target"
        jump = ["jump", "stranger"]

        [hosts.stranger]
        hostname = "{jump.address}"
        ssh_port = {jump.port}
        identity_file = "{stranger}"

        [hosts.closed-port]
        hostname = "{topology.target.address}"
        ssh_port = 1
        identity_file = "{jump.identity_file}"
        jump = ["jump"]
    """)
    # The by-address hops need the test known_hosts too (else the real ~/.ssh would be asked).
    config = root / "ssh_config"
    config.write_text(Path(topology.ssh_config).read_text() + f"""
Host {jump.address} {topology.target.address}
    User {jump.user}
    IdentitiesOnly yes
    UserKnownHostsFile {topology.known_hosts}
    StrictHostKeyChecking yes
    ConnectTimeout 5
""")
    ws.ssh_config = config
    state = root / "state"
    scene = Scene(ws, topology, state, port, prefix, bin_dir, "", "")
    try:
        scene.provision_out = scene.fab("provision", timeout=900).ok().stdout
        scene.serve_out = scene.fab("serve", timeout=300).ok().stdout
        yield scene
    finally:
        _kill_recorded(state)
        scene.fab("stop")
        scene.target_run("rm -f ~/.rmate.rc")


def url_in(output: str) -> str:
    found = re.findall(r"open: (http://\S+)", output)
    assert found, output
    return found[-1]


def port_of(url: str) -> int:
    return int(re.match(r"http://127\.0\.0\.1:(\d+)/", url).group(1))


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _own_port_taken(port: int) -> bool:
    """Does anything here (the laptop) accept connections on this port?"""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


# -- the topology itself -------------------------------------------------------------------------

def test_the_target_is_not_reachable_directly(scene: Scene) -> None:
    target = scene.topology.target
    with pytest.raises(OSError):
        socket.create_connection((target.address, target.port), timeout=3).close()
    direct = subprocess.run(["ssh", "-F", str(scene.topology.ssh_config), "-o", "ProxyJump=none",
                             "-o", "ConnectTimeout=3", "target", "true"], capture_output=True, text=True, timeout=30)
    assert direct.returncode == 255, direct.stderr


def test_provision_and_serve_went_through_the_jump(scene: Scene) -> None:
    assert "changed  create virtual environment" in scene.provision_out
    url = url_in(scene.serve_out)
    assert url.startswith(f"http://127.0.0.1:{scene.port}/lab?token=")
    status = scene.fab("status").ok().stdout
    assert "running: pid" in status and f"port {scene.port}" in status


# -- tunnel --------------------------------------------------------------------------------------

class Running:
    """A foreground `fab tunnel` read line by line (bounded waits)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     cwd=cwd, stdin=subprocess.DEVNULL)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def until(self, marker: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if marker in line:
                return "".join(self.seen)
            if line == "":
                break
        raise AssertionError(f"no {marker!r} in:\n{''.join(self.seen)}")

    def stop(self, sig: int = signal.SIGINT) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        rest = []
        while True:
            line = self.lines.get(timeout=10)
            if line == "":
                break
            rest.append(line)
        return "".join(self.seen + rest)


# The fab script itself (not a PATH-dependent shim): the paramiko test empties PATH.
FAB_SCRIPT = str(Path(sys.executable).with_name("fab")) if Path(sys.executable).with_name("fab").exists() else FAB


def fab_argv(scene: Scene, host: str, *args: str) -> list[str]:
    return [FAB_SCRIPT, "-r", str(REPO), "-S", str(scene.ws.ssh_config), "-H", host, *args]


def running_fab(scene: Scene, *args: str, host: str = "internal", env: Optional[dict[str, str]] = None) -> Running:
    return Running(fab_argv(scene, host, *args), scene.ws.env({**scene.env(), **(env or {})}), scene.ws.root)


def test_tunnel_foreground_answers_with_the_token_and_ctrl_c_closes_it(scene: Scene) -> None:
    run = running_fab(scene, "tunnel", "--local-port", str(free_port()))
    try:
        out = run.until("Ctrl-C closes it")
        url = url_in(out)
        local = port_of(url)
        assert "via this machine -> jump -> internal" in out
        assert http_status(url.replace("/lab?", "/api/contents?")) == 200
        assert http_status(f"http://127.0.0.1:{local}/api/contents") == 403
        status = scene.fab("status").ok().stdout
        assert f"tunnel open: 127.0.0.1:{local} -> internal:{scene.port} (foreground, openssh" in status
        (record,) = scene.records()
        ssh_pid = record["pid"]
        assert pid_alive(ssh_pid)
    finally:
        out = run.stop(signal.SIGINT)
    assert run.proc.returncode == 0, out
    assert "[internal] closed" in out
    assert wait_gone(ssh_pid), "ssh must be gone after Ctrl-C"
    assert scene.records() == []
    assert not _own_port_taken(local)


def test_tunnel_background_then_close(scene: Scene) -> None:
    out = scene.fab("tunnel", "--background").ok().stdout
    url = url_in(out)
    local = port_of(url)
    try:
        assert "running in the background (pid" in out
        assert http_status(url.replace("/lab?", "/api/status?")) == 200
        assert http_status(f"http://127.0.0.1:{local}/api/contents") == 403
        (record,) = scene.records()
        mode = (scene.state / "labhop").stat().st_mode & 0o777
        assert mode == 0o700 and record["mode"] == "background"
        # idempotent: the second run finds it open and working, and opens nothing new
        again = scene.fab("tunnel", "--background").ok().stdout
        assert "already open" in again and url_in(again) == url
        assert [r["pid"] for r in scene.records()] == [record["pid"]]
        status = json.loads(scene.fab("status", "--json").ok().stdout)["results"][0]
        assert [t["local_port"] for t in status["tunnels"]] == [local] and status["tunnels"][0]["alive"]
    finally:
        closed = scene.fab("tunnel", "--close").ok().stdout
    assert "closed 127.0.0.1:" in closed
    assert wait_gone(record["pid"])
    assert not _own_port_taken(local)
    assert "nothing to close" in scene.fab("tunnel", "--close").ok().stdout
    assert "tunnel open" not in scene.fab("status").ok().stdout


def test_busy_local_port_takes_the_next_free_one_and_says_so(scene: Scene) -> None:
    wanted = scene.port  # the default local port: the server's own
    with socket.socket() as holder:  # a local Jupyter already on the port (seed 001's 8888)
        # as a server binds (tornado too): connections the earlier tests' forwards closed on this
        # port may still sit in TIME_WAIT, which only a bind without SO_REUSEADDR trips over
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", wanted))
        holder.listen()
        out = scene.fab("tunnel", "--background").ok().stdout
        try:
            got = port_of(url_in(out))
            assert got != wanted
            assert f"local port {wanted} is busy here: using {got}" in out
            assert http_status(url_in(out).replace("/lab?", "/api/status?")) == 200
            # what `url` and `status` give is what opens here: the tunnel's port, not the server's
            assert scene.fab("url").ok().stdout.strip() == url_in(out)
            assert f"open: {url_in(out)}" in scene.fab("status").ok().stdout
        finally:
            scene.fab("tunnel", "--close").ok()
        # A port the user named is theirs: busy is an error, not a silent substitute.
        named = scene.fab("tunnel", "--background", "--local-port", str(wanted))
        assert named.returncode == 1, named.output
        assert named.stderr.strip() == (f"labhop: internal: --local-port {wanted}: busy on 127.0.0.1 here; "
                                        f"pick another, or leave --local-port out to take the next free one")


def test_three_hops_and_proxyjump_from_the_ssh_config_file(scene: Scene) -> None:
    # any depth: laptop -> jump -> jump (by address, its own key) -> target
    out = scene.fab("tunnel", "--background", host="three").ok().stdout
    try:
        assert "via this machine -> jump -> jump-again -> three" in out
        assert http_status(url_in(out).replace("/lab?", "/api/status?")) == 200
    finally:
        scene.fab("tunnel", "--close", host="three").ok()
    # ProxyJump from `fab -S FILE`, for a host the inventory does not list
    out = scene.fab("tunnel", "--background", host="target").ok().stdout
    try:
        assert "via this machine -> jump -> target" in out
        assert http_status(url_in(out).replace("/lab?", "/api/status?")) == 200
    finally:
        scene.fab("tunnel", "--close", host="target").ok()


def test_bind_listens_beyond_loopback_and_says_what_others_get(scene: Scene) -> None:
    laptop = scene.topology.laptop_address
    need(laptop not in (None, "127.0.0.1"), "no non-loopback laptop address in this topology")
    result = scene.fab("tunnel", "--background", "--bind", "0.0.0.0").ok()
    try:
        assert "shared with your network" in result.stdout
        token = url_in(result.stdout).split("token=")[1]
        local = port_of(url_in(result.stdout))
        # The forward listens on the LAN address (seed 001's addendum)...
        with socket.create_connection((laptop, local), timeout=5):
            pass
        # ...but the localhost variant refuses requests addressed to another name, and labhop says so.
        assert http_status(f"http://{laptop}:{local}/api/status?token={token}") == 403
        assert "other machines get HTTP 403 through this tunnel" in result.stderr
        assert http_status(f"http://127.0.0.1:{local}/api/status?token={token}") == 200
    finally:
        scene.fab("tunnel", "--close").ok()


def test_paramiko_fallback_when_no_ssh_binary(scene: Scene, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    refused = subprocess.run(fab_argv(scene, "internal", "tunnel", "--background"), capture_output=True, text=True,
                             env=scene.ws.env({**scene.env(), "PATH": str(empty)}), cwd=scene.ws.root, timeout=120)
    assert refused.returncode == 2 and "--background needs the OpenSSH client" in refused.stderr, refused.stderr
    run = running_fab(scene, "tunnel", "--local-port", str(free_port()), env={"PATH": str(empty)})
    try:
        out = run.until("Ctrl-C closes it")
        assert "falling back to paramiko" in out
        url = url_in(out)
        assert http_status(url.replace("/lab?", "/api/status?")) == 200
        assert http_status(f"http://127.0.0.1:{port_of(url)}/api/contents") == 403
    finally:
        out = run.stop(signal.SIGTERM)
    assert run.proc.returncode == 0 and "[internal] closed" in out, out
    assert scene.records() == []


# -- rmate ---------------------------------------------------------------------------------------

class FakeEditor:
    """A tiny rmate-protocol server (what rsub/RemoteSubl do): greet, read `open`, answer `close`."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(60)
        self.port = self.sock.getsockname()[1]
        self.received: "queue.Queue[tuple[str, dict, bytes]]" = queue.Queue()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn, conn.makefile("rwb") as stream:
            stream.write(b"labhop test editor 1.0\n")
            stream.flush()
            command = stream.readline().decode().strip()
            headers: dict[str, str] = {}
            data = b""
            while True:
                line = stream.readline()
                if not line.strip():
                    break
                name, _, value = line.decode().partition(":")
                headers[name.strip()] = value.strip()
                if name.strip() == "data":
                    data = stream.read(int(value))
            self.received.put((command, headers, data))
            stream.write(b"close\ntoken: " + headers.get("token", "").encode() + b"\n\n")
            stream.flush()

    def close(self) -> None:
        self.sock.close()


def rmate_on_target(scene: Scene, path: str, content: str) -> subprocess.CompletedProcess:
    """`rmate FILE` in a login shell on the target (it reads ~/.rmate.rc); -w waits for the editor's close."""
    rmate = f"{scene.bin_dir}/rmate"
    return scene.target_run(f"printf %s {shlex.quote(content)} > {path} && bash -lc '{rmate} -w {path}'", timeout=60)


def test_tunnel_rmate_opens_both_forwards_and_delivers_a_file(scene: Scene) -> None:
    editor = FakeEditor()
    try:
        out = scene.fab("tunnel", "--rmate", "--editor-port", str(editor.port), "--background").ok().stdout
        assert f"rmate: internal:52698 -> 127.0.0.1:{editor.port} here" in out
        assert "not needed: rmate's default port 52698" in out
        assert http_status(url_in(out).replace("/lab?", "/api/status?")) == 200
        done = rmate_on_target(scene, "~/seed-notes.txt", "seed 000: hello from internal\n")
        assert done.returncode == 0, done.stderr
        command, headers, data = editor.received.get(timeout=30)
        assert command == "open"
        assert data == b"seed 000: hello from internal\n"
        assert headers["real-path"].endswith("/seed-notes.txt")
        hint = scene.fab("rmate", "--close").ok().stdout
        assert "part of the tunnel" in hint
    finally:
        scene.fab("tunnel", "--close").ok()
        editor.close()


def test_rmate_port_taken_on_target_uses_a_free_one_in_rmate_rc(scene: Scene) -> None:
    holder_code = ("import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                   "s.bind(('127.0.0.1', 52698)); s.listen(); print('ready', flush=True); time.sleep(300)")
    # Another user's rmate tunnel on a shared login node, simulated in the target's network.
    holder = subprocess.Popen(scene.topology.target_exec_argv("python3", "-c", holder_code),
                              stdout=subprocess.PIPE, text=True)
    editor = FakeEditor()
    try:
        assert holder.stdout.readline().strip() == "ready"
        out = scene.fab("rmate", "--editor-port", str(editor.port), "--background").ok().stdout
        match = re.search(r"port 52698 is taken on internal .*: the reverse forward uses (\d+)", out)
        assert match, out
        port = int(match.group(1))
        assert f"changed  write ~/.rmate.rc (port {port})" in out
        rc = scene.target_run("cat ~/.rmate.rc; stat -c %a ~/.rmate.rc").stdout
        assert f"port: {port}" in rc and rc.strip().endswith("600") and "written by labhop" in rc
        done = rmate_on_target(scene, "~/shared-node.txt", "52698 was taken\n")
        assert done.returncode == 0, done.stderr
        command, _, data = editor.received.get(timeout=30)
        assert (command, data) == ("open", b"52698 was taken\n")
        again = scene.fab("rmate", "--editor-port", str(editor.port), "--background").ok().stdout
        assert "already open" in again
    finally:
        scene.fab("rmate", "--close").ok()
        editor.close()
        holder.kill()
        holder.wait()
        scene.target_run("rm -f ~/.rmate.rc")


def test_a_users_own_rmate_rc_is_left_alone(scene: Scene) -> None:
    mine = "# my own settings\nport: 52699\n"
    scene.target_run(f"printf %s {shlex.quote(mine)} > ~/.rmate.rc")
    try:
        out = scene.fab("rmate", "--editor-port", str(free_port()), "--background").ok()
        assert "left alone: not written by labhop" in out.stdout
        assert "rmate -p 52698 FILE" in out.stderr
        assert scene.target_run("cat ~/.rmate.rc").stdout == mine
    finally:
        scene.fab("rmate", "--close").ok()
        scene.target_run("rm -f ~/.rmate.rc")


# -- errors name the hop -------------------------------------------------------------------------

@pytest.mark.parametrize("host, expected", [
    ("dead-jump", r"jump host 1 of 1 closed-jump \(\S+@[\d.]+:1\): cannot connect to [\d.]+:1: Connection refused"),
    ("refused-key", r"jump host 2 of 2 stranger \(\S+@[\d.]+:\d+\): SSH authentication failed"),
    ("closed-port", r"jump cannot reach target closed-port \(\S+@[\d.]+:1\): "),
])
def test_errors_name_the_hop_in_one_line(scene: Scene, host: str, expected: str) -> None:
    for task in ("status", "tunnel"):
        result = scene.fab(task, host=host, timeout=60)
        assert result.returncode == 1, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
        assert re.search(f"^labhop: {host}: {expected}", lines[0]), lines[0]
    assert scene.records() == []


def test_tunnel_to_a_stopped_server_says_so(scene: Scene) -> None:
    scene.fab("stop").ok()
    try:
        result = scene.fab("tunnel")
        assert result.returncode == 1
        assert f"JupyterLab is not running on internal (configured for port {scene.port})" in result.stderr
        assert "fab -H internal serve" in result.stderr
    finally:
        scene.fab("serve", timeout=300).ok()
