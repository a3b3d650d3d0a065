"""One labhop run at a time per target prefix: a lock that spans the whole probe-plan-apply.

Pure: the command that starts the holder (tasks/remote/lock.py) on the target, what goes on its
stdin, and the parsing of what it says. ``executor.hold_lock`` runs it and keeps it alive while the
run goes on.

Why a process holding ``flock`` rather than a lock file with a pid in it: the holder is
started over the run's own SSH connection and holds the lock until its stdin reaches EOF.
EOF comes when the run releases it, and equally when the run dies (``kill -9`` of fab, a
cut connection: sshd closes the channel). The kernel drops an ``flock`` with the last
process holding it, so a lock can never go stale, and no pid has to be trusted across
machines. The lock file records who holds it only so that a waiting run can say so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from .. import shell
from ..remote import source
from .layout import Layout
from .probe import MIN_PYTHON, probe_source
from ..invocation import PROGRAM

# How long a run waits for another one on the same target before giving up (an install
# from scratch takes about a minute; a slow link several).
LOCK_WAIT = 900



@dataclass(frozen=True)
class Owner:
    """Who runs: shown to a run that has to wait."""

    task: str
    controller: str  # the controller's host name
    pid: int  # fab's pid on the controller

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "controller": self.controller, "pid": self.pid}


@dataclass(frozen=True)
class LockEvent:
    kind: str  # "waiting" | "locked" | "facts" | "query" | "error"
    value: Any


@dataclass(frozen=True)
class Query:
    """A second script the holder runs after the probe (its source on stdin after the probe's), its last JSON
    line passed on as a "query" event: ``serve --slurm`` asks about its job in the same command."""

    source: str
    args: tuple[str, ...]


def lock_command(python: str, layout: Layout, owner: Owner, min_python: tuple[int, ...] = MIN_PYTHON,
                 *, probe_args: Optional[str] = None, query: Optional[Query] = None) -> str:
    """The holder's command line; its stdin is ``holder_stdin(probe=..., query=...)``, then held open.
    ``probe_args`` (tasks/target/probe.py ``probe_args``): also probe the host once locked; ``query``: then
    run that script too (only with ``probe_args``).

    Only the loader (tasks/remote/loader.py, a few lines) travels in argv: it reads the holder's
    source from stdin, which leaves the rest of stdin to the holder (a script read by ``python -``
    would only start at EOF, and EOF is the holder's signal to let go)."""
    spec: dict[str, Any] = {"prefix": layout.prefix, "path": layout.lock_file, "owner": owner.as_dict(),
                            "min_python": list(min_python)}
    if probe_args is not None:
        spec.update(probe_args=probe_args, probe_bytes=len(probe_source().encode()))
        if query is not None:
            spec.update(query_args=list(query.args), query_bytes=len(query.source.encode()))
    # -S: no site-packages to scan at start-up (the scripts need the standard library only).
    return shell.join([python, "-S", "-c", source("loader.py"), str(len(source("lock.py").encode())),
                       json.dumps(spec)])


def holder_stdin(*, probe: bool = True, query: Optional[Query] = None) -> str:
    """What the holder's stdin starts with: its own source, then the probe's when it probes, then the query's."""
    return source("lock.py") + (probe_source() if probe else "") + (query.source if probe and query else "")


def parse_event(line: str) -> Optional[LockEvent]:
    """One line of the holder's output; anything else (a login banner) is None."""
    kind, _, rest = line.strip().partition(" ")
    if kind not in ("waiting", "locked", "facts", "query", "error"):
        return None
    try:
        return LockEvent(kind, json.loads(rest))
    except ValueError:
        return None


def describe_holder(holder: dict[str, Any]) -> str:
    """'`fab serve` (pid 41 on laptop, for 12s)' from what the lock file says."""
    if not holder:
        return "another labhop run"
    task = holder.get("task") or "?"
    parts = []
    if holder.get("pid"):
        parts.append(f"pid {holder['pid']} on {holder.get('controller') or '?'}")
    age = holder.get("age")
    if isinstance(age, (int, float)):
        parts.append(f"for {max(0, int(age))}s")
    return f"`{PROGRAM} {task}`" + (f" ({', '.join(parts)})" if parts else "")
