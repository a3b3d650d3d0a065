"""Long steps that die with the run that started them.

Without a pty, sshd leaves a command running when its client goes away: a ``kill -9``
of fab or a cut connection during ``pip install`` would leave that install running on
the target, racing the next run's install into the same venv. ``guarded`` runs a
command under a small watcher on the target's python: the command gets its own process
group, and when the watcher's stdin reaches EOF (the channel closed: the controller is
gone) the whole group is killed. The executor never closes the stdin of a command
without a payload, so EOF means exactly that.

Pure: builds the command text only; the watcher itself is tasks/remote/guard.py.
"""
from __future__ import annotations

from .. import shell
from ..remote import source



def guarded(python: str, command: str) -> str:
    """``command`` (POSIX sh) run so that it is killed, process group and all, if the run dies."""
    return shell.join([python, "-c", source("guard.py"), "sh", "-c", command])
