"""What a failed SSH connection (paramiko, sockets) means, in one line for the user.

Matched by exception type; paramiko is imported when a fault is described (Fabric has loaded it by then).
"""
from __future__ import annotations

import socket

from ..errors import LabhopError


def describe_connection_error(exc: BaseException) -> str:
    """One line for the faults SSH connections raise."""
    import paramiko  # already loaded with Fabric; imported here so the plan layer's tests need none of it

    if isinstance(exc, LabhopError):  # already one line (a refused host key, tasks/ssh/hostkeys.py)
        return str(exc)
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name ({exc.strerror or exc}); is it in inventory.toml or ssh_config?"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):  # {(address, port): OSError} per address
        reasons = sorted({(getattr(e, "strerror", None) or str(e)) for e in exc.errors.values()})
        where = ", ".join(sorted({f"{a[0]}:{a[1]}" for a in exc.errors}))
        return f"cannot connect to {where or 'the SSH port'}: {'; '.join(reasons) or 'connection refused'}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused: {exc}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"connection timed out: {exc}"
    if isinstance(exc, paramiko.AuthenticationException):
        # The base class says only "Authentication failed."; its subclasses say more.
        why = "no key or password offered was accepted" if type(exc) is paramiko.AuthenticationException else exc
        return f"SSH authentication failed: {why}"
    if isinstance(exc, paramiko.BadHostKeyException):
        return f"host key mismatch: {exc}"
    if isinstance(exc, paramiko.SSHException):
        return f"SSH failed: {exc}"
    if isinstance(exc, OSError):
        return f"connection failed: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
