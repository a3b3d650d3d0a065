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
"""
from __future__ import annotations

import functools
from importlib.resources import files


@functools.lru_cache(maxsize=None)
def source(name: str) -> str:
    """The text of one of the files above, as shipped to the target."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")
