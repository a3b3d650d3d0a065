"""Low-latency TCP under paramiko's SSH connections.

An SSH handshake is a string of small messages, several of them sent back to back by
one side. paramiko leaves Nagle's algorithm on, so a second small message waits for the
ACK of the first, and Linux delays that ACK by up to 40 ms: measured through one jump host
(bench/noop_provision.py's topology), connecting both hops took 0.24 s, 0.08 s with
``TCP_NODELAY`` (our sends go at once) and ``TCP_QUICKACK`` (the servers' sends are
acknowledged at once, so sshd's own Nagle does not hold its next reply). The OpenSSH client
sets ``TCP_NODELAY`` too.
"""
from __future__ import annotations

import socket
from typing import Any

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class QuickAckSocket(socket.socket):
    """A TCP socket that re-arms ``TCP_QUICKACK`` before each read (the kernel drops back to
    delayed ACKs on its own, so once is not enough)."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        try:
            self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[arg-type]
        except OSError:
            pass  # a closed or reset socket: recv says so itself
        return super().recv(bufsize, flags)


def low_latency(sock: Any) -> Any:
    """``sock`` tuned for SSH's small messages when it is a TCP socket; anything else (a paramiko
    Channel to the next hop, a ProxyCommand) as it is: the hop it goes through is tuned already."""
    if not isinstance(sock, socket.socket) or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return sock
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return sock
    if _QUICKACK is None or isinstance(sock, QuickAckSocket):
        return sock
    timeout = sock.gettimeout()
    tuned = QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    tuned.settimeout(timeout)
    return tuned
