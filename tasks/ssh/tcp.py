"""Low latency under paramiko's SSH connections: the TCP socket, and one message after login.

An SSH handshake is a string of small messages, several of them sent back to back by
one side. paramiko leaves Nagle's algorithm on, so a second small message waits for the
ACK of the first, and Linux delays that ACK by up to 40 ms: measured through one jump host
(bench/noop_provision.py's topology), connecting both hops took 0.24 s, 0.08 s with
``TCP_NODELAY`` (our sends go at once) and ``TCP_QUICKACK`` (the servers' sends are
acknowledged at once, so sshd's own Nagle does not hold its next reply). The OpenSSH client
sets ``TCP_NODELAY`` too.

The hop behind a jump host has TCP of its own, between the jump host and the target, which
labhop cannot tune: there OpenSSH's sshd sends a debug message right after login, the jump
host's kernel delays its ACK, and sshd's Nagle holds the answer to our first channel open
for those 40 ms. ``PromptTransport`` answers the debug message with an SSH_MSG_IGNORE (which
any server drops): forwarding it, the jump host acknowledges at once.
"""
from __future__ import annotations
from ..invocation import PROGRAM

import io
import os
import socket
import threading
from typing import Any

from paramiko import Transport

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


# paramiko's fallback path (no OpenSSH connection sharing): a second factor after the key.
SECOND_FACTOR_WAIT = 300.0  # paramiko waits 30 s for an answer: short for a person finding their phone
WAIT_ENV = "LABHOP_SECOND_FACTOR_WAIT"  # seconds, for a site whose push takes longer (or a shorter leash)
_ASKING = threading.Lock()  # a fleet's threads ask one at a time


def second_factor_wait() -> float:
    """How long a login may wait for the person (the code typed, the push approved), in seconds."""
    from ..errors import UsageError

    text = os.environ.get(WAIT_ENV, "").strip()
    if not text:
        return SECOND_FACTOR_WAIT
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 86400:
        raise UsageError(f"${WAIT_ENV}: {text!r} is not a number of seconds (1 to 86400)")
    return value


class PromptTransport(Transport):
    """A paramiko Transport that answers the server's first debug message with an ignored one, and asks
    for a second factor on the terminal (never paramiko's bare ``input()`` on stdout/stdin)."""

    _answered_debug = False
    label = ""  # the hop, as labhop names it (set by hostkeys.VerifyingPolicy.transport_factory)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.auth_timeout = second_factor_wait()

    def auth_interactive_dumb(self, username: str, handler: Any = None, submethods: str = "") -> list[str]:
        """What paramiko's SSHClient calls once the key was accepted and keyboard-interactive is due."""
        try:
            # As getpass opens it: a text "r+" open() wants a seekable file, which a terminal is not.
            tty = io.TextIOWrapper(io.FileIO(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY), "r+"),
                                   encoding="utf-8", errors="replace")
        except OSError:
            from ..errors import LabhopError

            raise LabhopError("the server asks for more than a key (keyboard-interactive: a second factor?) and "
                              f"there is no terminal to ask on; with OpenSSH's `ssh` here, `{PROGRAM} -H HOST login` "
                              "logs in once for every later run") from None

        def ask(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
            import getpass

            answers: list[str] = []
            with _ASKING:
                if self.label:  # a fleet asks for several hosts: say which one this answer is for
                    tty.write(f"labhop: {self.label} asks for a second factor\n")
                for text in (title, instructions):
                    if text and text.strip():
                        tty.write(text.strip() + "\n")
                tty.flush()
                for prompt, echo in prompts:
                    if echo:
                        tty.write(prompt)
                        tty.flush()
                        answers.append(tty.readline().rstrip("\n"))
                    else:
                        answers.append(getpass.getpass(prompt, stream=tty))
            return answers

        try:
            return self.auth_interactive(username, ask, submethods)
        finally:
            tty.close()

    def _parse_debug(self, m: Any) -> None:
        super()._parse_debug(m)  # type: ignore[misc]  # private in paramiko, absent from its stubs
        if not self._answered_debug:
            self._answered_debug = True
            # From a thread of its own: sending waits while a key exchange is under way, and this
            # runs in the transport's own thread, the one that would finish that exchange.
            threading.Thread(target=self._send_ignore, name="labhop-ignore", daemon=True).start()

    def _send_ignore(self) -> None:
        try:
            self.send_ignore(1)
        except Exception:  # the connection went away meanwhile: nothing to speed up
            pass
