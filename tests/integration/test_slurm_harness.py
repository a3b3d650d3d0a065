"""The Slurm harness (tests/harness/slurm.py) after a crash: a run killed with SIGKILL (no teardown, no
atexit) leaves its daemons, /etc/hosts lines, slurm.conf and network namespaces behind; the next run's
start undoes all of it before it builds its own."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.harness import topology as topo_mod
from tests.harness.slurm import HOSTS, HOSTS_MARK, SLURM_CONF, STATE, _Lock, cleanup_stale_slurm, slurm_available
from tests.support import REPO, need

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _netns() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_a_crashed_runs_cluster_is_undone_by_the_next_run(tmp_path: Path) -> None:
    ok, why = slurm_available()
    need(ok, why)
    script = textwrap.dedent(f"""
        import json, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from tests.harness.slurm import STATE, start_slurm
        from tests.harness.topology import build_topology
        topo = build_topology(Path({str(tmp_path / "topo")!r}), use_netns=True)
        cluster = start_slurm(topo, Path({str(tmp_path / "slurm")!r}))
        print(json.dumps({{"state": json.loads(STATE.read_text()), "jump_ns": topo.jump_netns,
                          "target_ns": topo.target_netns}}), flush=True)
        time.sleep(600)
    """)
    # a cluster of another run (a helper's, the lead's) is waited for: one per machine
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        line = child.stdout.readline() if child.stdout else ""
    finally:
        child.kill()  # SIGKILL: no teardown, no atexit
        child.wait(timeout=10)
    assert line, "the child run printed nothing (its stderr above)"
    info = json.loads(line)
    state = info["state"]
    daemons = [int(p) for p in state["pids"]]
    assert len(daemons) == 2 and state["node_ns"]
    with _Lock():  # no other run's start may clean up before we looked (it takes this lock first)
        # really left behind
        assert all(_alive(pid) for pid in daemons), daemons
        assert HOSTS_MARK in HOSTS.read_text() and SLURM_CONF.exists() and STATE.exists()
        assert state["node_ns"] in _netns()

        removed = cleanup_stale_slurm()  # what start_slurm does first, under this lock

        assert "slurm cluster of a dead run" in removed, removed
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in daemons) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in daemons), "slurmctld/slurmd must be killed"
        if state.get("munged_pid"):  # munged only when that run started it
            assert not _alive(int(state["munged_pid"]))
        assert HOSTS_MARK not in HOSTS.read_text()
        assert state["node_ns"] not in _netns()
        assert not STATE.exists()
        if state.get("conf_backup"):
            assert "labhop's test harness" not in SLURM_CONF.read_text()
        else:
            assert not SLURM_CONF.exists()
    # and the crashed run's topology, as build_topology does first
    topo_removed = topo_mod.cleanup_stale()
    assert f"netns {info['jump_ns']}" in topo_removed and f"netns {info['target_ns']}" in topo_removed
    assert info["jump_ns"] not in _netns() and info["target_ns"] not in _netns()
