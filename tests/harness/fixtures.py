"""Ready pytest fixtures; import into a conftest with
``from tests.harness.fixtures import *  # noqa``.

* ``sshd_server`` (session): one real sshd on 127.0.0.1 as an
  :class:`~tests.harness.sshd.SshServer` named ``target``; its
  ``ssh_config`` attribute is a file with ``Host target`` (use
  ``ssh -F server.ssh_config target`` or ``fab -S ... -H target``).
* ``topology`` (session): a :class:`~tests.harness.topology.Topology`
  (laptop -> jump -> target, network namespaces when root).
* ``no_leftover_control_dirs`` (session, autouse): the short control-socket directories labhop makes
  under the temp dir for the tests' deep state dirs are removed at the end when no socket is left in them.
* ``slurm_cluster`` (module): a :class:`~tests.harness.slurm.SlurmCluster` on the topology:
  slurmctld on the target (the login node), slurmd on ``node1`` behind it.
"""
from __future__ import annotations

import glob
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from .sshd import SshServer, start_sshd, write_ssh_config
from .slurm import SlurmCluster, slurm_available, start_slurm
from .topology import Topology, build_topology

__all__ = ["sshd_server", "topology", "slurm_cluster", "no_leftover_control_dirs"]


@pytest.fixture(scope="session", autouse=True)
def no_leftover_control_dirs() -> Iterator[None]:
    # tasks/ssh/master.control_dir: labhop-UID-HASH under the temp dir, one per state dir too deep for a socket path
    pattern = os.path.join(tempfile.gettempdir(), f"labhop-{os.getuid()}-*")
    before = set(glob.glob(pattern))
    yield
    for made in set(glob.glob(pattern)) - before:
        entries = list(Path(made).iterdir()) if os.path.isdir(made) else []
        if not any(stat.S_ISSOCK(entry.lstat().st_mode) for entry in entries):
            shutil.rmtree(made, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    workdir = tmp_path_factory.mktemp("sshd")
    server = start_sshd(workdir, "target")
    try:
        server.ssh_config = write_ssh_config(workdir / "ssh_config", [server])
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    topo = build_topology(tmp_path_factory.mktemp("topology"))
    try:
        yield topo
    finally:
        topo.close()


@pytest.fixture(scope="module")  # one cluster per machine: gone before another module starts its own
def slurm_cluster(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    from tests.support import need

    ok, why = slurm_available()
    need(ok, why)
    need(topology.isolated, f"the Slurm cluster needs the network-namespace topology: {topology.reason}")
    cluster = start_slurm(topology, tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.close()
