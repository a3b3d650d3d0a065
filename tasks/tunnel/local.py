"""What fab, the tunnel supervisor and hold.py need on this machine: is a port free to listen on,
does a master listen on its control socket, and a private JSON file written atomically.

Stdlib only, no package imports: tasks/tunnel/supervise.py runs as a bare script and imports
this file as a top-level module from its own folder.
"""
from __future__ import annotations

import json
import os
import socket
from typing import Any


def port_is_free(bind: str, port: int) -> bool:
    """Could ssh listen on bind:port right now? (SO_REUSEADDR as ssh sets it: TIME_WAIT is no obstacle.)

    Tested by binding, not connecting: a connection would open a forwarded channel.
    """
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind, port))
        except OSError:
            return False
    return True


def socket_listens(path: str) -> bool:
    """Something (an OpenSSH master) accepts connections on the unix socket ``path``.

    A bare connect, which the master drops at once: no ssh process, no round trip to a host.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def write_private_json(path: str, data: Any) -> None:
    """``data`` as JSON in ``path`` (0600), atomically: a reader sees the old file or the new one."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, sort_keys=True)
    os.replace(tmp, path)
