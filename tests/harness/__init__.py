"""Test harness: real OpenSSH servers (``sshd``) and a laptop -> jump -> target
network topology (``topology``).  Fixtures live in ``tests.harness.fixtures``.

Public API::

    SshServer, start_sshd(workdir, name, *, address="127.0.0.1", netns=None,
                          client_key=None, port=None)
    write_ssh_config(path, servers, jumps={}, *, known_hosts=None) -> Path
    write_known_hosts(path, servers) -> Path
    make_client_key(workdir) -> Path
    Topology, build_topology(workdir, *, use_netns=None), cleanup_stale()

Jupyter as a person uses it (import from the submodules; they need no sshd):

    tests.harness.kernel.run_cell(url, token, code, *, password=None) -> str   # a cell over the kernel websocket
    tests.harness.chromium.render(url, *, screenshot=None, wait_for=None) -> str  # DOM from headless chromium
"""
from .sshd import SshServer, free_port, make_client_key, start_sshd, write_known_hosts, write_ssh_config
from .topology import Topology, build_topology, cleanup_stale, netns_argv

__all__ = [
    "SshServer",
    "Topology",
    "build_topology",
    "cleanup_stale",
    "free_port",
    "make_client_key",
    "netns_argv",
    "start_sshd",
    "write_known_hosts",
    "write_ssh_config",
]
