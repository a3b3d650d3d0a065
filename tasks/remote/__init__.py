"""Code that runs on the target, kept as real files: linted, importable by tests, runnable by hand.

The controller never runs these itself: it reads their text (``source``) and ships it in the
command that runs it (tasks/target/*, tasks/plan.py, tasks/offline/install.py, tasks/tunnel/rmate.py
say how: the probe and the lock holder travel on stdin, the short helpers as ``python -c``).
Each is standard library only and runs on the target's python3 (>= 3.9, labhop's floor there;
tests/unit/test_remote.py checks that under 3.9); ``probe.py`` and ``lock.py`` also parse on older
Pythons far enough to report the version that is too old. Paths and markers are never spelled here:
they arrive as arguments (tasks/target/layout.py holds the one definition).

    probe.py            facts about the target, one JSON document     python3 probe.py ARGS_JSON
    lock.py             the per-prefix flock holder, probing once locked  python3 lock.py SPEC_JSON
    loader.py           reads a script of N bytes from stdin, runs it     (the lock holder's argv)
    guard.py            runs a command, kills its process group on stdin EOF  python3 guard.py CMD...
    wait_ready.py       waits until JupyterLab answers HTTP              python3 wait_ready.py URL PID_FILE LOG SECONDS
    stop.sh             TERM, then KILL, the server; drops its pid file   sh stop.sh PID PID_FILE [TMUX SESSION]
    unbundle.py         splits a pushed wheel bundle, checks sha256s     python3 unbundle.py DIR BUNDLE < LIST_JSON
    unpack_uv.py        uv's binary out of its wheel                    python3 unpack_uv.py WHEEL DEST
    uv_install.py       installs with uv and the target's pip settings   python3 uv_install.py UV HOW PYTHON REQ...
    rmate_ports.py      is rmate's port free, a spare one, ~/.rmate.rc     python3 rmate_ports.py PORT
    rmate_listening.py  waits until something listens on a loopback port  python3 rmate_listening.py PORT SECONDS
    slurm_query.py      the Slurm job's record, endpoint, config, squeue  python3 slurm_query.py RECORD ENDPOINT ...
    slurm_launch.py     in the Slurm job: free port, JupyterLab, endpoint  python3 slurm_launch.py ENDPOINT ...
"""
from __future__ import annotations

import functools
from importlib.resources import files


@functools.lru_cache(maxsize=None)
def source(name: str) -> str:
    """The text of one of the files above, as shipped to the target."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")
