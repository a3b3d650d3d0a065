"""Long steps that die with the run that started them.

Without a pty, sshd leaves a command running when its client goes away: a ``kill -9``
of fab or a cut connection during ``pip install`` would leave that install running on
the target, racing the next run's install into the same venv. ``guarded`` runs a
command under a small watcher on the target's python: the command gets its own process
group, and when the watcher's stdin reaches EOF (the channel closed: the controller is
gone) the whole group is killed. The executor never closes the stdin of a command
without a payload, so EOF means exactly that.

Pure: builds the command text only.
"""
from __future__ import annotations

from .. import shell

# Python 2.7+ (runs on the target's interpreter). argv[1:]: the command.
GUARD_SOURCE = r'''
import os, signal, subprocess, sys, threading, time
child = subprocess.Popen(sys.argv[1:], stdin=open(os.devnull), preexec_fn=os.setsid)
def watch():
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):  # the run is gone: take the whole group with it
        try:
            os.killpg(child.pid, sig)
        except OSError:
            return
        for _ in range(50):
            if child.poll() is not None:
                return
            time.sleep(0.1)
watcher = threading.Thread(target=watch)
watcher.daemon = True
watcher.start()
code = child.wait()
sys.exit(code if code >= 0 else 128 - code)
'''


def guarded(python: str, command: str) -> str:
    """``command`` (POSIX sh) run so that it is killed, process group and all, if the run dies."""
    return shell.join([python, "-c", GUARD_SOURCE, "sh", "-c", command])
