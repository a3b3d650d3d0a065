"""paramiko's path on a target whose sshd allows one session per connection (``MaxSessions 1``).

A run opens several sessions at once on its one connection: the lock holder's, each step's, SFTP for
uploads. Such a target refuses the second (a ``ChannelException`` before anything ran), so the
session is opened on another connection to the same target instead (through the same jump hosts,
with the same host-key check and keys; a second factor is asked as for the first), kept for the
run's next overlapping sessions and closed with the run. Said once per run. A refusal while no
other session is open is no such case: the target takes no command session at all (``MaxSessions 0``).
"""
from __future__ import annotations

import sys
import threading
from typing import Any, Callable, Optional

from fabric import Connection
from paramiko import Channel, ChannelException

from ..errors import LabhopError

_said = threading.Lock()
MAX_EXTRA = 4  # connections besides the first, per run


class SessionsConnection(Connection):  # type: ignore[misc]  # fabric ships no type hints
    """A Fabric Connection that opens a session on another connection where the target refuses one more."""

    label: str
    say: Callable[[str], None]
    extras: list[Connection]
    channels: list[tuple[Connection, Channel]]
    lock: threading.Lock

    def _busy(self, cxn: Connection) -> bool:
        return any(owner is cxn and not channel.closed for owner, channel in self.channels)

    def _session_on(self, cxn: Connection) -> Channel:
        channel: Channel = Connection.create_session(cxn)
        with self.lock:
            self.channels = [(o, c) for o, c in self.channels if not c.closed] + [(cxn, channel)]
        return channel

    def _another(self, skip: list[Connection]) -> Connection:
        """A connection with no session of ours open: one opened earlier in this run, else a new one.
        ``skip``: those that refused just now (sshd may not have let go of a session that just ended)."""
        with self.lock:
            for extra in self.extras:
                if extra not in skip and not self._busy(extra):
                    return extra
            if len(self.extras) >= MAX_EXTRA:
                raise LabhopError(f"target {self.label}: its sshd allows one session per connection and "
                                  f"{MAX_EXTRA + 1} of labhop's are busy; run again")
        from .hostkeys import secure

        extra = secure(Connection(self.original_host, user=self.user, port=self.port, config=self.config,
                                  gateway=self.gateway, connect_kwargs=dict(self.connect_kwargs),
                                  connect_timeout=self.connect_timeout))
        extra.open()
        with self.lock:
            self.extras.append(extra)
        if _said.acquire(blocking=False):
            self.say(f"labhop: {self.label}: its sshd allows one session per connection (MaxSessions 1): "
                     f"commands that overlap get an SSH connection of their own")
        return extra

    def _open_elsewhere(self, open_on: Callable[[Connection], Any]) -> Any:
        """``open_on`` a connection other than the refusing one, trying the next where one refuses too."""
        tried: list[Connection] = []
        while True:
            other = self._another(tried)
            try:
                return open_on(other)
            except ChannelException:
                tried.append(other)

    def _refused(self, exc: ChannelException) -> LabhopError:
        return LabhopError(f"target {self.label}: its sshd refuses every command session ({exc.text}; MaxSessions 0: "
                           f"forwarding only, as on a jump host); labhop needs to run commands there")

    def create_session(self) -> Channel:
        try:
            return self._session_on(self)
        except ChannelException as exc:
            if not any(not channel.closed for _owner, channel in self.channels):
                raise self._refused(exc) from None
        channel: Channel = self._open_elsewhere(self._session_on)
        return channel

    def sftp(self) -> Any:
        client: Any = getattr(self, "_sftp", None)
        if client is None:
            self.open()
            owner: Connection = self
            try:
                client = self.client.open_sftp()
            except ChannelException as exc:
                if not any(not channel.closed for _owner, channel in self.channels):
                    raise self._refused(exc) from None
                owner, client = self._open_elsewhere(lambda other: (other, other.client.open_sftp()))
            with self.lock:  # a session too, for as long as the run keeps it
                self.channels.append((owner, client.get_channel()))
            self._sftp = client
        return client

    def close(self) -> None:
        super().close()
        for extra in self.extras:
            extra.close()
        self.extras = []


def sessions(cxn: Connection, label: str, say: Optional[Callable[[str], None]] = None) -> SessionsConnection:
    """``cxn`` (the target's Connection) as a ``SessionsConnection``, in place (as runner.share does)."""
    cxn.__class__ = SessionsConnection
    swapped: SessionsConnection = cxn
    swapped._set(label=label, say=say or (lambda text: print(text, file=sys.stderr, flush=True)), extras=[],
                 channels=[], lock=threading.Lock())
    return swapped
