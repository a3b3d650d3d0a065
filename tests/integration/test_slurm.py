"""JupyterLab on a Slurm compute node: a real slurmctld on the login node (the topology's target, reached
through the jump host) and a real slurmd on node1, which only the login node reaches."""
from __future__ import annotations

import shlex
import socket
import time

import pytest

pytestmark = pytest.mark.integration


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
