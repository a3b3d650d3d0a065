"""The processes a forward lives in (ssh, or its supervisor): still running, the same one, ended.

A pid alone names no process for long: it is reused once the process is gone. A record keeps the
process's start time too, read from /proc on Linux and from ``ps`` where there is no /proc (macOS,
the BSDs); equal start times mean the same process.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

PROC = Path("/proc")


def start_time(pid: int) -> Optional[str]:
    """When ``pid`` started, as an opaque token to compare; None when it is gone or cannot be told."""
    if PROC.is_dir():
        try:
            stat = (PROC / str(int(pid)) / "stat").read_text()
        except OSError:
            return None
        return stat[stat.rfind(")") + 2:].split()[19]  # starttime, in clock ticks since boot
    return _ps_start_time(pid)


def _ps_start_time(pid: int) -> Optional[str]:
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(int(pid))], capture_output=True, text=True,
                             timeout=5, env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return None
    return " ".join(out.stdout.split()) or None


def is_running(pid: int, started: Optional[str] = None) -> bool:
    """``pid`` runs and, when ``started`` is known, is the process that started then (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if started is None:
        return True
    now = start_time(pid)
    if now is None:  # gone since the kill above (with /proc), or no way to tell: trust the signal
        return not PROC.is_dir()
    return now == started


def end_process(pid: int, *, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; works for a process we are not the parent of."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
