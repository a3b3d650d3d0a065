"""JupyterLab on a Slurm compute node: a real slurmctld on the login node (the topology's target, reached
through the jump host) and a real slurmd on node1, which only the login node reaches."""
from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

from tests.harness.kernel import run_cell, split_url
from tests.harness.slurm import SlurmCluster
from tests.integration.test_tunnel import FakeEditor
from tests.support import FAB, REPO, FabResult, Workspace, free_port, http_status, login, need

pytestmark = pytest.mark.integration

# Its own prefix on the shared login node: test_tunnel.py's first run must find its prefix fresh, and
# a Slurm job record there would make its host a Slurm one.
PREFIX, BIN_DIR = ".labhop-slurm", ".local/bin-slurm"
NO_SLURM_PYTHON = "no-slurm/python3"


@dataclass
class Scene:
    ws: Workspace
    cluster: SlurmCluster
    state: Path
    prefix: str
    serve_out: str = ""

    def fab(self, *args: str, host: str = "login", timeout: float = 300, env: Optional[dict] = None) -> FabResult:
        return self.ws.fab(*args, host=host, env={"XDG_STATE_HOME": str(self.state), **(env or {})},
                           timeout=timeout)

    def login(self, command: str) -> str:
        return self.cluster.topology.run("target", command, check=False).stdout

    def sessions(self) -> int:
        """Commands the login node's sshd has started so far (sshd logs each at LogLevel VERBOSE)."""
        return self.cluster.topology.target.log_path.read_text(errors="replace").count("Starting session: ")

    def alive_jobs(self) -> list[str]:
        """labhop's jobs that are queued or running."""
        return self.login("squeue -h --name=labhop-jupyter --states=PENDING,CONFIGURING,RUNNING -o %i").split()

    def squeue(self) -> str:
        return self.login("squeue --states=all -h -o '%i %T %N'")

    def state_of(self, job: str) -> str:
        return self.login(f"squeue --states=all -h -j {job} -o %T").strip()

    def start(self, *args: str) -> "Running":
        """`fab -H login ARGS` in the background, its output collected line by line."""
        argv = [FAB, "-r", str(REPO), "-S", str(self.ws.ssh_config), "-H", "login", *args]
        proc = subprocess.Popen(argv, cwd=self.ws.root, env=self.ws.env({"XDG_STATE_HOME": str(self.state)}),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True)
        return Running(proc)


class Running:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.lines = proc, []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return self.output
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not in the output:\n{self.output}")

    def finish(self, timeout: float = 180) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code


@pytest.fixture(scope="module")
def scene(topology, slurm_cluster, tmp_path_factory) -> Iterator[Scene]:
    root = tmp_path_factory.mktemp("slurm-scene")
    home = topology.target.home
    prefix = f"{home}/{PREFIX}"
    ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=topology.ssh_config)
    ws.write_inventory(f"""
        [hosts.login]
        hostname = "target"
        jump = ["jump"]
        prefix = "{prefix}"
        bin_dir = "{home}/{BIN_DIR}"

        [hosts.login.slurm]
        time = "20"
        wait = 120

        # the same login node, through a python whose PATH has no Slurm commands (no sbatch)
        [hosts.nosbatch]
        hostname = "target"
        jump = ["jump"]
        prefix = "{home}/{PREFIX}-nosbatch"
        bin_dir = "{home}/{BIN_DIR}-nosbatch"
        python = "{home}/{NO_SLURM_PYTHON}"
    """)
    sc = Scene(ws, slurm_cluster, root / "state", prefix)
    try:
        sc.serve_out = sc.fab("serve", "--slurm", timeout=900).ok().output
        yield sc
    finally:
        if any((sc.state / "labhop").glob("*.json")):
            sc.fab("tunnel", "--close")
        sc.fab("stop")
        slurm_cluster.login_run("scancel", "--name=labhop-jupyter")


def _url(output: str) -> str:
    found = re.findall(r"open: (http://\S+)", output)
    assert found, output
    return found[-1]


def _job(output: str) -> str:
    found = re.findall(r"job (\d+)", output)
    assert found, output
    return found[-1]


def test_serve_slurm_runs_jupyterlab_on_the_node_and_a_kernel_there_through_the_tunnel(scene: Scene) -> None:
    out = scene.serve_out
    job = _job(out)
    assert "submitted job" in out and f"RUNNING on {scene.cluster.node_name}" in out, out
    assert f"{job} RUNNING {scene.cluster.node_name}" in scene.squeue()
    endpoint = json.loads(scene.login(f"cat {scene.prefix}/slurm/endpoint.json"))
    assert endpoint["node"] == scene.cluster.node_name and endpoint["host"] == scene.cluster.node_address
    assert scene.login(f"stat -c %a {scene.prefix}/slurm/endpoint.json {scene.prefix}/slurm").split() == ["600", "700"]
    # the token is in no argv: not in the job script Slurm keeps, nor in the job's command line
    token = split_url(_url(out))[1]
    assert token and token not in scene.cluster.scontrol("show", "job", job, "-dd").stdout
    assert token not in scene.login(f"cat {scene.prefix}/slurm/job-{job}.log")

    tunnel = scene.fab("tunnel", "--background", "--local-port", str(free_port())).ok().output
    url = _url(tunnel)
    base, token = split_url(url)
    assert run_cell(base, token, "import socket; print(socket.gethostname())").strip() == scene.cluster.node_name
    scene.fab("tunnel", "--close").ok()


def test_serve_slurm_again_changes_nothing_in_one_command_on_the_login_node(scene: Scene) -> None:
    sessions = scene.sessions()
    again = scene.fab("serve", "--slurm").ok().output
    # the lock holder probes and asks squeue in the same command: nothing else runs there
    assert scene.sessions() - sessions == 1, again
    assert f"serve: nothing to do, job {_job(scene.serve_out)} serves" in again, again
    assert "submitted job" not in again and "  changed  " not in again, again
    assert _job(again) == _job(scene.serve_out)
    # --json carries the job: id, state, node, its address, time left, the URL (docs/ci.md)
    doc = json.loads(scene.fab("serve", "--slurm", "--json").ok().stdout)["results"][0]
    endpoint = json.loads(scene.login(f"cat {scene.prefix}/slurm/endpoint.json"))
    assert (doc["result"], doc["slurm_job"], doc["slurm_state"], doc["node"]) == (
        "unchanged", _job(scene.serve_out), "RUNNING", "node1"), doc
    assert doc["node_address"] == f"{endpoint['host']}:{endpoint['port']}" and doc["slurm_cluster"] is None
    assert re.match(r"^\d+:\d+$", doc["time_left"]) and doc["url"] == _url(scene.serve_out), doc


def test_status_and_logs_of_the_job(scene: Scene) -> None:
    status = scene.fab("status").ok().output
    assert re.search(rf"job {_job(scene.serve_out)} RUNNING on node1, \d+:\d+ left", status), status
    assert "open: http://127.0.0.1:" in status
    doc = json.loads(scene.fab("status", "--json").ok().stdout)["results"][0]
    assert doc["slurm_state"] == "RUNNING" and doc["node"] == "node1" and doc["running"] is True
    assert doc["slurm_job"] == _job(scene.serve_out) and doc["url"] == _url(status), doc
    assert re.match(r"^\d+:\d+$", doc["time_left"]), doc
    assert scene.fab("url").ok().stdout.strip() == _url(status)
    logs = scene.fab("logs").ok().stdout
    assert "labhop: JupyterLab answers on" in logs, logs


def test_rmate_says_it_forwards_to_the_login_node_where_it_delivers(scene: Scene) -> None:
    job = _job(scene.serve_out)
    editor = FakeEditor()
    try:
        out = scene.fab("rmate", "--editor-port", str(editor.port), "--background").ok().output
        assert (f"JupyterLab runs in Slurm job {job} on node1; rmate forwards to the login node login, where the "
                f"files are the same (the shared home): run `rmate FILE` in a shell on login") in out, out
        port = int(re.findall(r"rmate: login:(\d+) -> 127\.0\.0\.1", out)[-1])
        # true as said: from a shell on the login node the file reaches the editor here ...
        rmate = f"{scene.cluster.topology.target.home}/{BIN_DIR}/rmate"
        done = scene.cluster.topology.run("target", f"printf 'from the login node\\n' > ~/slurm-rmate.txt && "
                                                    f"{rmate} -w ~/slurm-rmate.txt", check=False, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        command, _, data = editor.received.get(timeout=30)
        assert (command, data) == ("open", b"from the login node\n")
        # ... while on the job's node (a JupyterLab terminal's) nothing listens on rmate's port
        there = scene.cluster.node_run("python3", "-c", _CONNECT, "127.0.0.1", str(port))
        assert there.stdout.strip() != "ok", there.stdout
    finally:
        scene.fab("rmate", "--close")
        editor.close()


def test_tunnel_to_the_job_in_the_foreground_and_bound_beyond_loopback(scene: Scene) -> None:
    run = scene.start("tunnel", "--local-port", str(free_port()))
    try:
        out = run.wait_for("Ctrl-C closes it")
        url = _url(out)
        base, token = split_url(url)
        assert "via this machine -> jump -> login" in out, out
        assert http_status(f"{base}/api/status?token={token}") == 200
        assert http_status(f"{base}/api/contents") == 403
    finally:
        run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 0 and "[login] closed" in run.output, run.output
    with pytest.raises(OSError):
        http_status(f"{base}/api/status?token={token}", timeout=3)

    laptop = scene.cluster.topology.laptop_address
    need(laptop not in (None, "127.0.0.1"), "no non-loopback laptop address in this topology")
    port = free_port()
    bound = scene.fab("tunnel", "--background", "--bind", "0.0.0.0", "--local-port", str(port)).ok()
    try:
        assert "shared with your network" in bound.stdout, bound.output
        token = split_url(_url(bound.stdout))[1]
        # the job's server listens on the node's address, not localhost: a machine on your network that
        # has the token gets in (the token guards it), one without does not
        assert http_status(f"http://{laptop}:{port}/api/status?token={token}") == 200
        assert http_status(f"http://{laptop}:{port}/api/contents") == 403
        assert "other machines get HTTP 403" not in bound.output
    finally:
        scene.fab("tunnel", "--close").ok()


def test_zz_stop_cancels_the_job_and_waits_until_it_is_gone(scene: Scene) -> None:
    job = _job(scene.serve_out)
    out = scene.fab("stop").ok().output
    assert f"cancelled job {job}" in out, out
    assert f"{job} RUNNING" not in scene.squeue()
    status = scene.fab("status").ok().output
    assert f"job {job} ended: CANCELLED" in status and "serve --slurm` submits a new job" in status, status
    again = scene.fab("stop").ok().output
    assert "ended: CANCELLED" in again
    gone = scene.fab("url")
    assert gone.returncode == 1 and "no Slurm job serves here (ended: CANCELLED" in gone.stderr, gone.output


# -- faults -------------------------------------------------------------------------------------------

def test_two_serves_at_once_make_one_job(scene: Scene) -> None:
    """The target lock: one run submits, the other waits for it, then finds that job serving."""
    assert not scene.alive_jobs(), scene.squeue()
    runs = [scene.start("serve", "--slurm"), scene.start("serve", "--slurm")]
    assert [run.finish(timeout=300) for run in runs] == [0, 0], [run.output for run in runs]
    submitter = [run.output for run in runs if "submitted job" in run.output]
    waiter = [run.output for run in runs if "submitted job" not in run.output]
    assert len(submitter) == 1 and len(waiter) == 1, [run.output for run in runs]
    job = re.findall(r"submitted job (\d+)", submitter[0])[-1]
    assert "is working on this target; this run goes on when it is done" in waiter[0], waiter[0]
    assert f"serve: nothing to do, job {job} serves" in waiter[0], waiter[0]
    assert scene.alive_jobs() == [job], scene.squeue()


def test_no_sbatch_on_the_login_node_is_one_line_and_leaves_nothing(scene: Scene) -> None:
    home = scene.cluster.topology.target.home
    scene.login(f"mkdir -p ~/no-slurm/bin && ln -sf /usr/bin/python3 ~/no-slurm/bin/python3 && "
                f"printf '#!/bin/sh\\nPATH=$HOME/no-slurm/bin exec /usr/bin/python3 \"$@\"\\n' > "
                f"~/{NO_SLURM_PYTHON} && chmod 755 ~/{NO_SLURM_PYTHON}")
    assert scene.login(f"~/{NO_SLURM_PYTHON} -c 'import shutil; print(shutil.which(\"sbatch\"))'").strip() == "None"
    jobs = scene.login("squeue --states=all -h -o %i").split()
    for args in (("serve", "--slurm"), ("serve", "--slurm", "--dry-run")):
        res = scene.fab(*args, host="nosbatch")
        assert res.returncode == 1, res.output
        assert res.stderr.strip().splitlines() == [
            "labhop: nosbatch: no sbatch on the login node: is this a Slurm login node? (a `module load slurm` in "
            "~/.profile is not seen by non-interactive SSH commands; put it in ~/.bashrc)"], res.output
        assert "Traceback" not in res.output and "submitted" not in res.output
    assert scene.login("squeue --states=all -h -o %i").split() == jobs  # nothing submitted
    assert scene.login(f"ls -d {home}/{PREFIX}-nosbatch {home}/{BIN_DIR}-nosbatch 2>&1").count("No such file") == 2

def test_a_job_cancelled_behind_labhops_back_and_a_busy_port_on_the_node(scene: Scene) -> None:
    first = scene.fab("serve", "--slurm").ok().output
    job = _job(first)
    scene.cluster.login_run("scancel", job)
    _until(lambda: scene.state_of(job) == "CANCELLED", f"job {job} cancelled")
    status = scene.fab("status").ok().output
    assert f"job {job} ended: CANCELLED" in status and "last lines of" in status, status
    # the node's port 8888 is taken by someone else: the job takes another one and says so
    squatter = scene.cluster.node_popen("python3", "-c", _LISTEN, scene.cluster.node_address, "8888")
    try:
        _until(lambda: "ok" in scene.cluster.node_run("python3", "-c", _CONNECT, scene.cluster.node_address,
                                                         "8888").stdout, "the squatter listens")
        again = scene.fab("serve", "--slurm").ok().output
        assert f"job {job} ended: CANCELLED" in again and "submit a new one" in again, again
        new = _job(again)
        assert new != job
        endpoint = json.loads(scene.login(f"cat {scene.prefix}/slurm/endpoint.json"))
        assert endpoint["job"] == new and endpoint["port"] != 8888
        assert "port 8888 is taken on node1" in scene.fab("logs").ok().stdout
        assert f":{endpoint['port']}/lab?token=" in again
    finally:
        squatter.kill()
        squatter.wait()


def test_ctrl_c_while_pending_cancels_the_job(scene: Scene) -> None:
    scene.cluster.drain()
    try:
        run = scene.start("serve", "--slurm", "--time", "19")
        out = run.wait_for("pending:")
        job = re.findall(r"submitted job (\d+)", out)[-1]
        run.proc.send_signal(signal.SIGINT)
        assert run.finish() == 130, run.output
        assert f"interrupted: cancelled job {job}, nothing is left queued" in run.output, run.output
        assert scene.state_of(job) == "CANCELLED"
        # the previous job was cancelled once the new one was queued: settings changed
        assert "settings changed" in run.output

        timed = scene.fab("serve", "--slurm", "--wait", "3")
        assert timed.returncode == 1, timed.output
        assert re.search(r"did not serve within 3s \(pending: .*\): cancelled it", timed.output), timed.output
        assert scene.state_of(_job(timed.output)) == "CANCELLED"
    finally:
        scene.cluster.resume()


def test_slurmctld_restarted_while_labhop_waits(scene: Scene) -> None:
    scene.cluster.drain()
    resumed = False
    try:
        run = scene.start("serve", "--slurm", "--time", "18")
        out = run.wait_for("pending:")
        job = re.findall(r"submitted job (\d+)", out)[-1]
        # down until labhop has seen squeue give up on it (squeue --jobs retries its connection for about 18 s
        # with Slurm 22.05's defaults), at most 60 s
        scene.cluster.restart_slurmctld(downtime=60, until_asked=lambda: "state unknown" in run.output)
        scene.cluster.wait_node(("drained", "draining", "drained*"), timeout=60)
        scene.cluster.resume()
        resumed = True
        assert run.finish() == 0, run.output
        assert "RUNNING on node1" in run.output and "open: http://127.0.0.1:" in run.output
        # said as a warning, with squeue's words, and never a reason to cancel
        assert re.search(rf"\[login\] warning: job {job}: state unknown: the Slurm controller did not answer "
                         rf"\(.*(Unable to contact slurm controller|Socket timed out|Connection refused)", run.output,
                         re.IGNORECASE), run.output
        assert "cancel" not in run.output.split("state unknown")[1], run.output
    finally:
        if not resumed:
            scene.cluster.resume()


def test_sbatch_refusing_and_a_job_dying_before_it_answers(scene: Scene) -> None:
    running = _job(scene.fab("status").ok().output)
    refused = scene.fab("serve", "--slurm", "--partition", "nope")
    assert refused.returncode == 1 and "sbatch refused the job" in refused.output, refused.output
    assert "invalid partition" in refused.output.lower()
    assert scene.state_of(running) == "RUNNING"  # the job that serves is left alone
    dry = scene.fab("serve", "--slurm", "--dry-run", "--partition", "nope")
    assert dry.returncode == 1 and "#SBATCH --partition=nope" in dry.output, dry.output
    assert "sbatch --test-only refused the job" in dry.output and "invalid partition" in dry.output.lower()
    dry = scene.fab("serve", "--slurm", "--dry-run", "--time", "5").ok().output
    assert "#SBATCH --job-name=labhop-jupyter" in dry and "sbatch --test-only: " in dry, dry
    assert "would    settings changed" in dry and scene.state_of(running) == "RUNNING"
    dead = scene.fab("serve", "--slurm", "--sbatch-arg=--export=ALL,PYTHONHOME=/nonexistent")
    assert dead.returncode == 1, dead.output
    assert re.search(r"job \d+ ended before JupyterLab answered \(ended: FAILED", dead.output), dead.output
    assert "cannot run JupyterLab on node1" in dead.output


def test_bad_slurm_flags_are_usage_errors_before_connecting(scene: Scene) -> None:
    for args, text in ((("--slurm", "--time", "4h"), "--time: '4h' is not a Slurm time limit"),
                       (("--partition", "gpu"), "--partition needs --slurm")):
        res = scene.fab("serve", *args, host="nowhere.invalid")
        assert res.returncode == 2 and text in res.stderr, res.output


PASSWORD = "slurm pässword 7"


def test_public_job_password_and_tls_through_the_tunnel_then_back_to_the_token(scene: Scene) -> None:
    out = scene.fab("serve", "--slurm", "--public", env={"LABHOP_PASSWORD": PASSWORD}).ok().output
    job = _job(out)
    assert re.search(rf"job {job}: RUNNING on node1, .*; JupyterLab at {scene.cluster.node_address}:\d+", out), out
    assert "TLS: self-signed certificate" in out and "TLS: SHA-256 fingerprint" in out, out
    found = re.findall(r"open: (https://127\.0\.0\.1:\d+/lab)  \(after", out)
    assert found and "token=" not in found[-1], out
    config_file = f"{scene.prefix}/slurm/jupyter/jupyter_server_config.py"
    config = scene.login(f"cat {config_file}")
    hashed = re.findall(r"hashed_password = '(\$2b\$[^']+)'", config)
    assert hashed and PASSWORD not in config and "c.ServerApp.certfile = " in config, config
    assert scene.login(f"stat -c %a {config_file}").strip() == "600"
    endpoint = json.loads(scene.login(f"cat {scene.prefix}/slurm/endpoint.json"))
    assert endpoint["job"] == job and endpoint["scheme"] == "https"
    # neither the password nor its hash in the output, Slurm's copy of the job, its log or any argv
    for secret in (PASSWORD, hashed[0]):
        assert secret not in out
        assert secret not in scene.cluster.scontrol("show", "job", job, "-dd").stdout
        assert secret not in scene.login(f"cat {scene.prefix}/slurm/job-{job}.log")
        assert secret not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout

    port = free_port()
    tunnel = scene.fab("tunnel", "--background", "--local-port", str(port)).ok().output
    base = f"https://127.0.0.1:{port}"
    assert f"open: {base}/lab" in tunnel, tunnel
    try:
        assert http_status(f"{base}/api/contents") == 403
        assert login(base, "wrong password")[0] == 401
        assert login(base, PASSWORD) == (200, 200)
        with pytest.raises(OSError):  # nothing in clear text through the tunnel
            http_status(f"http://127.0.0.1:{port}/api/contents", timeout=5)
        status = scene.fab("status").ok().output
        assert re.search(r"open: https://127\.0\.0\.1:\d+/lab  \(after", status), status
        doc = json.loads(scene.fab("status", "--json").ok().stdout)["results"][0]
        assert doc["url"].startswith("https://127.0.0.1:") and doc["slurm_job"] == job, doc
        assert scene.fab("url").ok().stdout.strip().startswith("https://127.0.0.1:")
        # what serve is not told does not change: no --public, no password, the public job goes on
        again = scene.fab("serve", "--slurm").ok().output
        assert f"serve: nothing to do, job {job} serves" in again and "kept from an earlier run" in again, again
    finally:
        scene.fab("tunnel", "--close")
    back = scene.fab("serve", "--slurm", "--ip", "127.0.0.1").ok().output
    assert f"settings changed: cancel job {job}" in back and f"cancelled job {job}" in back, back
    assert re.search(r"open: http://127\.0\.0\.1:\d+/lab\?token=\w+", back), back
    assert "hashed_password = ''" in scene.login(f"cat {config_file}")


def test_zzz_walltime_running_out(scene: Scene) -> None:
    out = scene.fab("serve", "--slurm", "--time", "1").ok().output
    job = _job(out)
    assert re.search(rf"warning: job {job} has only 0:\d\d of walltime left", out), out
    _until(lambda: scene.state_of(job) == "TIMEOUT", f"job {job} timed out", timeout=120)
    status = scene.fab("status").ok().output
    assert f"job {job} ended: TIMEOUT" in status, status


def _until(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout}s: {what}")


_LISTEN = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(5)
time.sleep(600)
"""


def _wait_file(topology, path: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = topology.run("target", f"cat {path} 2>/dev/null", check=False)
        if res.returncode == 0 and res.stdout:
            return res.stdout
        time.sleep(0.3)
    raise AssertionError(f"{path} did not appear within {timeout}s")


def test_harness_runs_a_job_on_node1_reachable_only_from_the_login_node(topology, slurm_cluster, tmp_path):
    out = tmp_path / "job.out"
    submitted = topology.run("target", f"printf '#!/bin/sh\\nhostname\\n' | sbatch --parsable -o {out}")
    job_id = submitted.stdout.strip().split(";")[0]
    assert job_id.isdigit(), submitted.stdout
    assert _wait_file(topology, str(out)).strip() == slurm_cluster.node_name
    # the login node reaches the node; the laptop and the jump host do not
    ping = slurm_cluster.login_run("python3", "-c", _CONNECT, slurm_cluster.node_address, "6818")
    assert ping.stdout.strip() == "ok", ping.stdout + ping.stderr
    jump = topology.run("jump", f"python3 -c {_quoted(_CONNECT)} {slurm_cluster.node_address} 6818", check=False)
    assert jump.stdout.strip() != "ok"
    with socket.socket() as s:
        s.settimeout(2)
        with pytest.raises(OSError):
            s.connect((slurm_cluster.node_address, 6818))


_CONNECT = """
import socket, sys
s = socket.socket(); s.settimeout(2)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("ok")
except OSError as e:
    print(e)
"""


def _quoted(text: str) -> str:
    return shlex.quote(text)
