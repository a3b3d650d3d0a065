"""The forwards open from this machine: one record (a pidfile in JSON) per forward.

State lives in ``$XDG_STATE_HOME/labhop`` (default ``~/.local/state/labhop``, 0700): per host and
kind a record (0600), the supervisor's state file beside it and the ``ssh`` client's log.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..ssh.openssh import bracket
from . import supervise
from .local import write_private_json
from .process import end_process, is_running
from ..invocation import PROGRAM

STATE_SUBDIR = "labhop"
TUNNEL, RMATE = "tunnel", "rmate"


def state_dir(environ: Optional[dict[str, str]] = None, *, create: bool = True) -> Path:
    """``$XDG_STATE_HOME/labhop`` or ``~/.local/state/labhop``, made 0700 when ``create``."""
    env = os.environ if environ is None else environ
    if env.get("XDG_STATE_HOME"):
        base = Path(env["XDG_STATE_HOME"])
    else:
        base = Path(env.get("HOME") or Path.home()) / ".local" / "state"
    path = base / STATE_SUBDIR
    if create:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)
    return path


def _slug(host: str) -> str:
    """A file-name-safe form of the host name, unique per name."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", host)[:60]
    return safe if safe == host else f"{safe}-{hashlib.sha256(host.encode()).hexdigest()[:8]}"


@dataclass
class Record:
    host: str
    kind: str  # TUNNEL (maybe with the rmate forward too) or RMATE
    pid: int
    mode: str  # "background" or "foreground"
    transport: str  # "openssh" or "paramiko"
    started: str
    proc_start: Optional[str] = None  # the process's start time: a reused pid is not our ssh (process.py)
    bind: Optional[str] = None
    local_port: Optional[int] = None
    remote_host: Optional[str] = None
    remote_port: Optional[int] = None
    rmate_port: Optional[int] = None  # on the target
    editor_port: Optional[int] = None  # here
    log: Optional[str] = None
    path: Optional[str] = field(default=None, compare=False)

    def describe(self) -> str:
        parts = []
        if self.local_port:
            parts.append(f"{bracket(self.bind or '127.0.0.1')}:{self.local_port} -> "
                         f"{self.host}:{self.remote_port}")
        if self.rmate_port:
            label = "rmate " if self.kind == TUNNEL else ""
            parts.append(f"{label}{self.host}:{self.rmate_port} -> 127.0.0.1:{self.editor_port}")
        return f"{', '.join(parts)} ({self.mode}, {self.transport}, pid {self.pid}, since {self.started})"

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "path"}


def record_path(host: str, kind: str) -> Path:
    return state_dir() / f"{kind}-{_slug(host)}.json"


def state_path(host: str, kind: str) -> Path:
    """What the supervisor of a background forward is doing (tasks/tunnel/supervise.py)."""
    return record_path(host, kind).with_suffix(".state")


def log_path(host: str, kind: str) -> Path:
    """The ``ssh`` client's stderr (and the supervisor's) for this forward."""
    return record_path(host, kind).with_suffix(".log")


def write_record(record: Record) -> Path:
    path = record_path(record.host, record.kind)
    write_private_json(str(path), record.as_dict())
    record.path = str(path)
    return path


def read_records(host: Optional[str] = None) -> list[Record]:
    records = []
    for path in sorted(state_dir(create=False).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            record = Record(**{k: v for k, v in data.items() if k in Record.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            continue
        record.path = str(path)
        if host is None or record.host == host:
            records.append(record)
    return records


def tunnel_port(host: str) -> Optional[int]:
    """The local port of the tunnel open to ``host``'s JupyterLab, if one runs: the URL to open here
    uses it (it differs from the server's port when that one was busy here, or with --local-port)."""
    for record in read_records(host):
        if record.kind == TUNNEL and record.local_port and is_alive(record):
            return record.local_port
    return None


def is_alive(record: Record) -> bool:
    """The recorded process still runs, and it is the same process (not a reused pid)."""
    return is_running(record.pid, record.proc_start)


def remove_record(record: Record) -> None:
    if record.path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(Path(record.path).with_suffix(".state"))


def close_records(host: str, kinds: tuple[str, ...], say: Callable[[str], None]) -> int:
    """End the forwards of ``kinds`` open to ``host``; returns how many were running."""
    closed = 0
    records = [r for r in read_records(host) if r.kind in kinds]
    if RMATE in kinds and TUNNEL not in kinds:
        for r in read_records(host):
            if r.kind == TUNNEL and r.rmate_port and is_alive(r):
                say(f"the rmate forward is part of the tunnel (pid {r.pid}): "
                    f"`{PROGRAM} -H {host} tunnel --close` ends both")
    for record in records:
        if is_alive(record):
            end_process(record.pid)
            say(f"closed {record.describe()}")
            closed += 1
        else:
            say(f"removed the record of a forward that had already ended ({record.describe()})")
        remove_record(record)
    if not records:
        say(f"no open {' or '.join(kinds)} forward to {host}: nothing to close")
    return closed


def status_lines(host: str) -> list[str]:
    lines = []
    for record in read_records(host):
        state = "open" if is_alive(record) else f"ended (ssh exited; `{PROGRAM} tunnel --close` clears it)"
        supervisor = supervise.read_state(str(state_path(host, record.kind))) if is_alive(record) else None
        lines.append(f"{record.kind} {state}: {record.describe()}{supervise.describe(supervisor)}")
    return lines


def status_data(host: str) -> list[dict[str, Any]]:
    return [{**r.as_dict(), "alive": is_alive(r),
             "supervisor": supervise.read_state(str(state_path(host, r.kind)))} for r in read_records(host)]
