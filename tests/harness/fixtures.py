"""Ready pytest fixtures; import into a conftest with
``from tests.harness.fixtures import *  # noqa``.

* ``sshd_server`` (session): one real sshd on 127.0.0.1 as an
  :class:`~tests.harness.sshd.SshServer` named ``target``; its
  ``ssh_config`` attribute is a file with ``Host target`` (use
  ``ssh -F server.ssh_config target`` or ``fab -S ... -H target``).
* ``topology`` (session): a :class:`~tests.harness.topology.Topology`
  (laptop -> jump -> target, network namespaces when root).
* ``slurm_cluster`` (module): a :class:`~tests.harness.slurm.SlurmCluster` on the topology:
  slurmctld on the target (the login node), slurmd on ``node1`` behind it.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from .sshd import SshServer, start_sshd, write_ssh_config
from .slurm import SlurmCluster, slurm_available, start_slurm
from .topology import Topology, build_topology

__all__ = ["sshd_server", "topology", "slurm_cluster"]


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
