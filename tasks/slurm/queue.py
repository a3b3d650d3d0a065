"""What squeue says about a job, read so that it holds on a real cluster.

Pure. labhop asks ``squeue --states=all`` with an explicit ``--format`` and without the user's SQUEUE_*
variables (query.py), so that a finished job still prints a line and nothing the user set changes the
columns. "Invalid job id" means the job ended long enough ago (MinJobAge) to be forgotten; a controller
that does not answer is UNKNOWN: keep asking, never act on it.
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Optional

# id | state | reason | nodes | time left | submitted | started | ends (ended) | limit   (| never occurs in these)
FORMAT = "%i|%T|%r|%N|%L|%V|%S|%e|%l"
FIELDS = ("id", "state", "reason", "node", "time_left", "submitted", "started", "ends", "limit")

ENDED = ("COMPLETED", "CANCELLED", "TIMEOUT", "FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE", "REVOKED", "SPECIAL_EXIT")
PENDING = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING")
# squeue's messages when the controller cannot be asked right now: the job's state is unknown, not ended.
_CONTROLLER_DOWN = ("socket timed out", "unable to contact slurm controller", "connection refused",
                    "communication connection failure", "backup controller", "slurm_load_jobs error: zero bytes",
                    "resource temporarily unavailable", "connection timed out")
_GONE = ("invalid job id",)

UNKNOWN = "UNKNOWN"  # our word, for a controller that did not answer
GONE = "GONE"  # our word, for a job squeue no longer knows (ended before MinJobAge)

# Warn when less walltime than this is left.
LOW_WALLTIME = 15 * 60


@dataclass(frozen=True)
class JobState:
    state: str  # Slurm's (PENDING, RUNNING, TIMEOUT, ...) or UNKNOWN / GONE
    reason: str = ""
    node: str = ""
    time_left: str = ""
    submitted: str = ""
    started: str = ""
    ends: str = ""
    limit: str = ""
    detail: str = ""  # squeue's own words for UNKNOWN

    @property
    def pending(self) -> bool:
        return self.state in PENDING

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"

    @property
    def ended(self) -> bool:
        """Over, or over soon (COMPLETING): a new job is needed for a server."""
        return self.state in ENDED or self.state in (GONE, "COMPLETING")

    @property
    def over(self) -> bool:
        """Ended and gone from the node (not COMPLETING any more)."""
        return self.state in ENDED or self.state == GONE

    @property
    def known(self) -> bool:
        return self.state != UNKNOWN

    @property
    def seconds_left(self) -> Optional[int]:
        return parse_time_left(self.time_left) if self.running else None

    def low_walltime(self) -> bool:
        left = self.seconds_left
        return left is not None and left < LOW_WALLTIME


def parse_squeue(job_id: str, returncode: int, stdout: str, stderr: str) -> JobState:
    """One job's state from ``squeue --noheader --states=all --jobs ID --format FORMAT``'s output."""
    text = f"{stderr}\n{stdout}".lower()
    if any(word in text for word in _GONE):
        return JobState(GONE)
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != len(FIELDS) or parts[0] != job_id:
            continue  # "CLUSTER: name" headers with --clusters, a site's banner
        values = dict(zip(FIELDS, (p.strip() for p in parts)))
        values.pop("id")
        return JobState(**values)
    if returncode != 0 or any(word in text for word in _CONTROLLER_DOWN):
        detail = " | ".join(line.strip() for line in (stderr or stdout).splitlines() if line.strip())[-300:]
        return JobState(UNKNOWN, detail=detail or f"squeue exited {returncode}")
    # squeue answered and listed nothing: the job is no longer known
    return JobState(GONE)


_LEFT = re.compile(r"^(?:(?P<d>\d+)-)?(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+)$")


def parse_time_left(value: str) -> Optional[int]:
    """squeue's ``%L``: ``D-HH:MM:SS``, ``H:MM:SS``, ``M:SS``; None for UNLIMITED, NOT_SET, INVALID."""
    match = _LEFT.match(value.strip())
    if not match:
        return None
    d, h, m, s = (int(match.group(k) or 0) for k in ("d", "h", "m", "s"))
    return ((d * 24 + h) * 60 + m) * 60 + s


def parse_timestamp(value: str) -> Optional[datetime.datetime]:
    """Slurm's ``%V``/``%S`` (local time of the controller's host, ISO without zone); None for N/A."""
    try:
        return datetime.datetime.strptime(value.strip(), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None


def elapsed(since: str, now: str) -> Optional[int]:
    """Seconds from a Slurm timestamp to ``now`` (the login node's clock, same format)."""
    start, end = parse_timestamp(since), parse_timestamp(now)
    if start is None or end is None:
        return None
    return max(0, int((end - start).total_seconds()))


def duration(seconds: Optional[int]) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def describe(state: JobState, *, now: str = "") -> str:
    """One line: ``pending: Resources (waited 1m05s)``, ``RUNNING on node17, 3:12:40 left``, ``ended: TIMEOUT``."""
    if state.pending:
        waited = elapsed(state.submitted, now) if now else None
        reason = state.reason if state.reason and state.reason != "None" else "waiting for its turn"
        return f"pending: {reason}" + (f" (waited {duration(waited)})" if waited is not None else "")
    if state.state == UNKNOWN:
        return f"state unknown: the Slurm controller did not answer ({state.detail})"
    if state.state == GONE:
        return "ended (Slurm no longer lists it)"
    if state.running:
        left = state.time_left if state.time_left and state.time_left != "UNLIMITED" else "no time limit"
        return f"RUNNING on {state.node}, " + (f"{left} left" if left != "no time limit" else left)
    if state.state in ENDED:
        when = f" at {state.ends}" if parse_timestamp(state.ends) else ""
        return f"ended: {state.state}{when}"
    return f"{state.state}" + (f" on {state.node}" if state.node and state.node != "(null)" else "")
