"""Faults against a real sshd: labhop survives them and the next run converges.

- fab killed with SIGKILL in the middle of provision (during the venv, during the install);
- the SSH connection cut from the target's side during the install;
- two runs at the same time on one target (serialized by the target lock, both succeed);
- JupyterLab killed behind labhop's back (status says so, serve starts it again);
- a jump host's sshd restarted under a background tunnel (it comes back by itself).

The sshd "target" runs on this machine, so its processes are visible in /proc here: the
tests look for processes working on a test's prefix to time their faults and to check that
nothing of a killed run survives it. A fault "during the install" is timed by construction, not
by sleeping: the target's pip.conf names a find-links page that holds every request until the
test releases it (``StallingLinks``), so the installer is still at work when the fault strikes.
"""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from tests.support import FAB, REPO, FabResult, Workspace, free_port, http_status, need

pytestmark = pytest.mark.integration


@dataclass
class Target:
    ws: Workspace
    server: object  # tests.harness.sshd.SshServer
    root: Path
    port: int

    def prefix(self, name: str) -> str:
        return str(self.root / "prefixes" / name)

    def use(self, name: str) -> str:
        """Point the inventory's host `target` at its own prefix; returns the prefix."""
        prefix = self.prefix(name)
        self.ws.write_inventory(f"""
            [hosts.target]
            prefix = "{prefix}"
            bin_dir = "{prefix}-bin"
            port = {self.port}
        """)
        return prefix

    def fab(self, *args: str, timeout: float = 600) -> FabResult:
        return self.ws.fab(*args, host="target", timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        """`fab -H target ARGS` in the background, the way Workspace.fab runs it."""
        argv = [FAB, "-r", str(REPO), "-S", str(self.ws.ssh_config), "-H", "target", *args]
        return subprocess.Popen(argv, cwd=self.ws.root, env=self.ws.env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def target(sshd_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("faults")
    home = root / "home"
    home.mkdir()
    ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=sshd_server.ssh_config, home=home)
    t = Target(ws=ws, server=sshd_server, root=root, port=free_port())
    yield t
    for prefix in (root / "prefixes").glob("*"):  # whatever a failed test left running
        t.use(prefix.name)
        t.fab("stop")


# -- processes on the target ------------------------------------------------------------------

def processes_mentioning(text: str) -> list[tuple[int, list[str]]]:
    """Live processes whose command line mentions ``text`` (the target shares this /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(text in arg for arg in argv):
            found.append((int(entry), argv))
    return found


def workers(prefix: str, marker: str) -> list[int]:
    """The processes doing a step on ``prefix`` (``marker``: "venv" or "install"), not their wrappers."""
    venv = f"{prefix}/venv"
    pids = []
    for pid, argv in processes_mentioning(venv):
        if argv[:1] in (["sh"], ["/bin/sh"]) or (len(argv) > 2 and argv[1] == "-c"):
            continue  # the executor's `sh -c`, the guard, the lock holder
        if marker == "venv" and "venv" in argv and ("--clear" in argv or argv[1:2] == ["venv"]):  # python, uv
            pids.append(pid)
        elif marker == "install" and "install" in argv:
            pids.append(pid)
    return pids


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ancestor_named(pid: int, name: str) -> Optional[int]:
    """The nearest ancestor of ``pid`` whose command name is ``name``."""
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if comm == name:
            return pid
        pid = int(rest[1])
    return None


# -- an install that stays at work until the test lets it go --------------------------------------

class StallingLinks:
    """A find-links page on 127.0.0.1 that answers no request until ``release``: named in the target's
    pip.conf, it is read by the install step (uv, handed pip's find-links by tasks/remote/uv_install.py,
    or pip itself), which cannot finish without it. ``asked`` is set by the first request."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.released = threading.Event()
        links = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                links.asked.set()
                links.released.wait(900)
                body = b"<!DOCTYPE html><html><body></body></html>\n"  # no links: the index has them all
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                with contextlib.suppress(OSError):  # the asker may be gone: killed with its run
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def stalled_install(t: Target) -> Iterator[StallingLinks]:
    """The target user's ~/.config/pip/pip.conf names a ``StallingLinks`` page while the block runs."""
    conf = t.server.home / ".config" / "pip" / "pip.conf"
    before = conf.read_text() if conf.exists() else None
    links = StallingLinks()
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(f"[global]\nfind-links = {links.url}\n")
    try:
        yield links
    finally:
        links.close()
        if before is None:
            conf.unlink()
        else:
            conf.write_text(before)


def install_held_open(links: StallingLinks, prefix: str) -> int:
    """Wait until the install step on ``prefix`` asks the stalling page; its installer's pid. That
    process cannot end before ``links.release()``, so it and its ancestors can be inspected safely."""
    wait_for(links.asked.is_set, 600, "the install on the target to read its find-links page")
    pids = wait_for(lambda: workers(prefix, "install"), 30, "the installer's process on the target")
    return pids[0]


def assert_converged(t: Target, prefix: str) -> None:
    """A further run changes nothing, the venv works, and no temp file of a killed write is left."""
    again = t.fab("provision").ok().stdout
    assert "provision: nothing to do" in again, again
    venv_python = f"{prefix}/venv/bin/python"
    check = subprocess.run([venv_python, "-c", "import jupyterlab, jupyter_server, bcrypt"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert os.access(f"{prefix}/venv/bin/rmate", os.X_OK)
    assert not list(Path(prefix).rglob("*.labhop-tmp*"))


def kill_fab(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return out + err


# -- kill -9 of labhop --------------------------------------------------------------------------

def test_kill_9_of_fab_mid_install_then_a_rerun_completes(target: Target) -> None:
    prefix = target.use("kill-install")
    with contextlib.ExitStack() as stack:
        links = stack.enter_context(stalled_install(target))
        proc = target.start("provision")
        try:
            install_held_open(links, prefix)  # the install is at work until released: kill it there
        finally:
            kill_fab(proc)
            links.release()
        # The step dies with the run that started it (tasks/remote/guard.py), the lock holder with it:
        # nothing keeps working on the prefix behind the next run's back.
        wait_for(lambda: not processes_mentioning(prefix), 30, f"every process on {prefix} to go")

        rerun = target.fab("provision").ok().stdout
    assert "changed  install jupyterlab, bcrypt, rmate" in rerun, rerun  # whatever the kill left, redone
    assert_converged(target, prefix)


def test_a_venv_whose_creation_was_cut_is_made_again(target: Target) -> None:
    """What a kill during the venv step leaves: a venv directory without its completion mark.

    (uv makes a venv in about 0.2 s, too short to kill fab inside it reliably; the kill itself is
    tested on the install step above, held open by construction.)"""
    prefix = target.use("cut-venv")
    plan = target.fab("provision", "--dry-run").ok().stdout
    version = re.search(r"create virtual environment \S+ with Python (\S+)", plan)
    assert version, plan
    Path(prefix).mkdir(mode=0o700, parents=True)
    half = Path(prefix) / "venv"
    (half / "bin").mkdir(parents=True)  # a venv uv had only begun to write: no python, no mark
    (half / "pyvenv.cfg").write_text(f"home = /usr/bin\nversion_info = {version.group(1)}\n")
    rerun = target.fab("provision").ok().stdout
    assert ("changed  create virtual environment" in rerun  # its python never written: made anew
            or "changed  recreate (its creation was interrupted) virtual environment" in rerun), rerun
    assert "changed  install jupyterlab, bcrypt, rmate" in rerun, rerun
    assert_converged(target, prefix)


# -- the connection cut from the target's side -------------------------------------------------

def test_connection_cut_during_the_install_then_a_rerun_converges(target: Target) -> None:
    prefix = target.use("cut")
    with stalled_install(target) as links:
        proc = target.start("provision")
        try:
            installer = install_held_open(links, prefix)
            sshd = ancestor_named(installer, "sshd")  # the sshd process serving this connection
            assert sshd is not None and sshd != target.server.pid
            os.kill(sshd, signal.SIGKILL)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                kill_fab(proc)
            links.release()
        assert proc.returncode == 1, out + err
        assert "Traceback" not in out + err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and re.fullmatch(
            rf"labhop: target: install jupyterlab, bcrypt, rmate into {re.escape(prefix)}/venv( from \S+)?: the SSH "
            rf"connection was lost before it finished; run the task again, it picks up where this one stopped",
            lines[0]), err
        wait_for(lambda: not processes_mentioning(prefix), 30, f"every process on {prefix} to go")

        rerun = target.fab("provision").ok().stdout
    assert "changed  install jupyterlab, bcrypt, rmate" in rerun, rerun
    assert_converged(target, prefix)


# -- two runs at once ----------------------------------------------------------------------------

def test_two_runs_at_once_are_serialized_and_both_succeed(target: Target) -> None:
    prefix = target.use("together")
    try:
        serve = target.start("serve")
        provision = target.start("provision")
        results = {}
        for name, proc in (("serve", serve), ("provision", provision)):
            out, err = proc.communicate(timeout=900)
            assert proc.returncode == 0, f"{name}:\n{out}{err}"
            results[name] = out
        waited = [name for name, out in results.items() if "waiting: `fab " in out]
        assert len(waited) == 1, results  # one of them found the other holding the lock, and said so
        other = {"serve": provision, "provision": serve}[waited[0]]
        line = next(x for x in results[waited[0]].splitlines() if "waiting: `fab " in x)
        assert f"(pid {other.pid} on " in line, line
        installs = [name for name, out in results.items() if "changed  install jupyterlab, bcrypt, rmate" in out]
        assert len(installs) == 1, results  # the second found it all in place
        if waited == ["provision"]:
            assert "provision: nothing to do" in results["provision"], results["provision"]
        url = results["serve"].strip().splitlines()[-1].split("open: ", 1)[1]
        assert http_status(url.replace("/lab?", "/api/status?")) == 200
        assert not processes_mentioning(f"{prefix}/lock")  # the lock holders are gone
    finally:
        target.fab("stop")


# -- JupyterLab killed behind labhop's back ---------------------------------------------------

def test_jupyter_killed_behind_labhops_back(target: Target) -> None:
    target.use("together")  # the venv the test above made (provisioned again if it ran alone)
    try:
        first = target.fab("serve", timeout=900).ok().stdout
        url = first.strip().splitlines()[-1].split("open: ", 1)[1]
        before = json.loads(target.fab("status", "--json").ok().stdout)["results"][0]
        assert before["running"] is True
        os.kill(before["pid"], signal.SIGKILL)
        wait_for(lambda: not os.path.exists(f"/proc/{before['pid']}") or
                 Path(f"/proc/{before['pid']}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
                 30, "JupyterLab to die")

        status = target.fab("status").ok().stdout
        assert (f"not running: JupyterLab (pid {before['pid']}) died unexpectedly, its pid file is stale; "
                f"`fab serve` starts it again") in status, status
        doc = json.loads(target.fab("status", "--json").ok().stdout)["results"][0]
        assert doc["running"] is False and doc["stale_pid"] == before["pid"] and doc["pid"] is None

        again = target.fab("serve").ok().stdout
        assert f"(again: pid {before['pid']} died unexpectedly)" in again, again
        assert again.strip().splitlines()[-1] == first.strip().splitlines()[-1]  # same URL, same token
        assert http_status(url.replace("/lab?", "/api/status?")) == 200
        after = json.loads(target.fab("status", "--json").ok().stdout)["results"][0]
        assert after["running"] is True and after["pid"] != before["pid"] and after["stale_pid"] is None
    finally:
        target.fab("stop")
    # Once stopped, nothing is reported dead any more.
    assert "not running" in target.fab("status").ok().stdout


# -- a jump host's sshd restarted under a background tunnel ------------------------------------

def restart_sshd(server: object) -> object:
    """Stop an sshd and its connections (a reboot or `systemctl restart` that drops them), start
    it again: same address, port, host key, client key."""
    from tests.harness.sshd import start_sshd

    server.stop()
    again = start_sshd(server.workdir.parent, server.name, address=server.address, netns=server.netns,
                       client_key=server.identity_file, port=server.port)
    again.ssh_config = server.ssh_config
    return again


def test_a_background_tunnel_comes_back_after_the_jump_hosts_sshd_restarts(topology, tmp_path_factory) -> None:
    need(topology.isolated or os.environ.get("LABHOP_TEST_ALLOW_LOOPBACK_TOPOLOGY") == "1",
         f"the jump topology is not isolated: {topology.reason}")
    root = tmp_path_factory.mktemp("faults-jump")
    home = root / "home"
    home.mkdir()
    ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=topology.ssh_config, home=home)
    port = free_port()
    ws.write_inventory(f"""
        [hosts.target]   # the ssh_config alias: through the jump host (ProxyJump)
        prefix = "{topology.target.home}/.labhop-faults"
        bin_dir = "{topology.target.home}/.local/bin-faults"
        port = {port}
    """)
    state = home / ".local" / "state" / "labhop"
    record: dict = {}
    try:
        ws.fab("serve", host="target", timeout=900).ok()  # installs offline: the target has no index
        out = ws.fab("tunnel", "--background", host="target").ok().stdout
        url = re.findall(r"open: (http://\S+)", out)[-1]
        api = url.replace("/lab?", "/api/status?")
        assert http_status(api) == 200
        record = json.loads(next(state.glob("tunnel-*.json")).read_text())

        topology.jump = restart_sshd(topology.jump)  # the session's topology stops the new one at the end
        # The supervisor notices ssh exit, waits, starts it again (backoff), until the jump answers.
        wait_for(lambda: _answers(api), 90, "the tunnel to answer again")

        status = ws.fab("status", host="target").ok().stdout
        line = next(x for x in status.splitlines() if "tunnel open:" in x)
        assert f"pid {record['pid']}," in line  # the same supervisor, not a new tunnel
        assert re.search(r"reconnected \d+ times? by itself, last \d+s ago", line), line
        doc = json.loads(ws.fab("status", "--json", host="target").ok().stdout)["results"][0]
        tunnel = doc["tunnels"][0]
        assert tunnel["alive"] is True and tunnel["supervisor"]["state"] == "up"
        assert tunnel["supervisor"]["restarts"] >= 1
        log = Path(record["log"]).read_text()
        assert "labhop: ssh exited (255); starting it again in 1s (attempt 1)" in log
    finally:
        ws.fab("tunnel", "--close", host="target")
        ws.fab("stop", host="target")
    assert not list(state.glob("tunnel-*.json")) and not list(state.glob("*.state"))
    assert record and not _alive(record["pid"])


def _answers(url: str) -> bool:
    try:
        return http_status(url, timeout=3) == 200
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
