"""JupyterLab on a Slurm compute node: a real slurmctld on the login node (the topology's target, reached
through the jump host) and a real slurmd on node1, which only the login node reaches."""
from __future__ import annotations

import json
import re
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

from tests.harness.kernel import run_cell, split_url
from tests.harness.slurm import SlurmCluster
from tests.support import FabResult, Workspace

pytestmark = pytest.mark.integration

# test_tunnel.py's prefix: the venv one of them provisioned serves the other (a fresh one costs a minute)
PREFIX, BIN_DIR = ".labhop-tunnel", ".local/bin-tunnel"


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

    def squeue(self) -> str:
        return self.login("squeue --states=all -h -o '%i %T %N'")


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

    tunnel = scene.fab("tunnel", "--background", "--local-port", str(_free_port())).ok().output
    url = _url(tunnel)
    base, token = split_url(url)
    assert run_cell(base, token, "import socket; print(socket.gethostname())").strip() == scene.cluster.node_name
    scene.fab("tunnel", "--close").ok()


def test_serve_slurm_again_changes_nothing(scene: Scene) -> None:
    again = scene.fab("serve", "--slurm").ok().output
    assert "nothing to do" in again and "submitted" not in again, again
    assert _job(again) == _job(scene.serve_out)


def test_status_and_logs_of_the_job(scene: Scene) -> None:
    status = scene.fab("status").ok().output
    assert re.search(rf"job {_job(scene.serve_out)} RUNNING on node1, \d+:\d+ left", status), status
    assert "open: http://127.0.0.1:" in status
    doc = json.loads(scene.fab("status", "--json").ok().stdout)["results"][0]
    assert doc["slurm_state"] == "RUNNING" and doc["node"] == "node1" and doc["running"] is True
    assert re.match(r"^\d+:\d+$", doc["time_left"]), doc
    logs = scene.fab("logs").ok().stdout
    assert "labhop: JupyterLab answers on" in logs, logs


def test_zz_stop_cancels_the_job_and_waits_until_it_is_gone(scene: Scene) -> None:
    job = _job(scene.serve_out)
    out = scene.fab("stop").ok().output
    assert f"cancelled job {job}" in out, out
    assert f"{job} RUNNING" not in scene.squeue()
    status = scene.fab("status").ok().output
    assert f"job {job} ended: CANCELLED" in status and "serve --slurm` submits a new job" in status, status
    again = scene.fab("stop").ok().output
    assert "ended: CANCELLED" in again


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
