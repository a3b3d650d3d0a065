"""One labhop run at a time per target prefix: a lock that spans the whole probe-plan-apply.

Pure: the script that holds the lock on the target and the parsing of what it says.
``executor.hold_lock`` runs it and keeps it alive while the run goes on.

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
from .layout import Layout
from .probe import MIN_PYTHON, PROBE_SOURCE

# How long a run waits for another one on the same target before giving up (an install
# from scratch takes about a minute; a slow link several).
LOCK_WAIT = 900

# Runs on the target's python (any version from 2.7 on: it refuses one older than labhop
# needs before anything is written). argv[1]: JSON {path, prefix, owner, min_python, and
# optionally probe_args, probe_bytes}. With a probe, stdin starts with probe_bytes of the
# probe's source (tasks/target/probe.py), which runs once the lock is held: lock and facts in one
# command, one session and one interpreter start on the target.
# Prints one line per event: "waiting <owner json>", "locked <json>", "facts <json>", "error <text>".
# A first run that fails leaves nothing behind: the prefix this holder created is removed on
# release if the lock file is all it holds. A waiter checks that the file it locked is still
# the one at the path (that removal unlinks it) and starts over if not.
LOCK_SOURCE = r'''
import errno, fcntl, json, os, select, sys, time
args = json.loads(sys.argv[1])
def say(kind, value):
    sys.stdout.write(kind + " " + json.dumps(value) + "\n"); sys.stdout.flush()
need = tuple(args["min_python"])
if sys.version_info[:len(need)] < need:
    say("error", "%s is Python %s; labhop needs Python >= %s on the target" % (
        sys.executable, ".".join(map(str, sys.version_info[:3])), ".".join(map(str, need))))
    sys.exit(3)
def expand(p):
    return os.path.join(os.path.expanduser("~"), p[2:]) if p.startswith("~/") else os.path.expanduser(p)
prefix, path = expand(args["prefix"]), expand(args["path"])
def fail(what, exc):
    say("error", "cannot %s %s: %s" % (what, getattr(exc, "filename", None) or prefix,
                                       os.strerror(exc.errno) if exc.errno else exc))
    sys.exit(3)
probe_source = None
if args.get("probe_bytes"):
    chunks, left = [], args["probe_bytes"]
    while left > 0:
        chunk = os.read(sys.stdin.fileno(), left)
        if not chunk: sys.exit(0)  # the run went away before it sent the probe
        chunks.append(chunk); left -= len(chunk)
    probe_source = b"".join(chunks).decode("utf-8")
def gone():
    # The run that started us gave up or died: stop waiting, never take the lock for nobody.
    return bool(select.select([sys.stdin], [], [], 0.2)[0]) and not os.read(sys.stdin.fileno(), 65536)
os.umask(0o077)
created = waited = False
while True:
    if not os.path.isdir(prefix):
        try:
            os.makedirs(prefix, 0o700); created = True
        except OSError as exc:
            if exc.errno != errno.EEXIST: fail("create", exc)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        # A read-only prefix that already has its lock file can still be locked (and probed):
        # whether anything needs writing there is for the plan to say.
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            fail("write below", exc)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino: break
        except OSError:
            pass
        os.close(fd); continue  # we locked a file its holder removed on the way out: again
    except (IOError, OSError) as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK): fail("lock", exc)
    if not waited:
        try:
            holder = json.loads(os.read(fd, 4096).decode() or "{}")
            holder["age"] = time.time() - holder.get("since", time.time())  # the target's clock only
        except (OSError, ValueError, TypeError, AttributeError):
            holder = {}
        say("waiting", holder); waited = True
    os.close(fd)
    if gone(): sys.exit(0)
owner = dict(args["owner"], holder_pid=os.getpid(), since=time.time())
try:  # best effort: who holds the lock is for messages only (a full disk must not stop us here)
    os.ftruncate(fd, 0); os.lseek(fd, 0, 0); os.write(fd, json.dumps(owner).encode())
except OSError:
    pass
say("locked", {"created_prefix": created, "waited": waited})
if probe_source is not None:
    import io, traceback
    captured, real = io.StringIO(), sys.stdout
    sys.stdout, sys.argv, failure = captured, ["-", args["probe_args"]], None
    try:
        exec(compile(probe_source, "<labhop probe>", "exec"), {"__name__": "__main__"})
    except SystemExit:
        pass
    except Exception:
        failure = traceback.format_exc().strip().splitlines()[-1]
    sys.stdout = real
    facts = [line for line in captured.getvalue().splitlines() if line.startswith("{")]
    if failure or not facts:
        say("error", "probing the target failed: %s" % (failure or "it printed no facts"))
    else:
        sys.stdout.write("facts " + facts[-1] + "\n"); sys.stdout.flush()
while os.read(sys.stdin.fileno(), 65536):
    pass
try:
    if created and os.listdir(prefix) == [os.path.basename(path)]:  # the run wrote nothing: leave no trace
        os.unlink(path); os.rmdir(prefix)
except OSError:
    pass
'''


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
    kind: str  # "waiting" | "locked" | "facts" | "error"
    value: Any


def lock_command(python: str, layout: Layout, owner: Owner, min_python: tuple[int, ...] = MIN_PYTHON,
                 *, probe_args: Optional[str] = None) -> str:
    """The holder's command line. ``probe_args`` (tasks/target/probe.py ``probe_args``): also probe the host
    once locked; ``PROBE_SOURCE`` then goes first on the holder's stdin."""
    spec: dict[str, Any] = {"prefix": layout.prefix, "path": layout.lock_file, "owner": owner.as_dict(),
                            "min_python": list(min_python)}
    if probe_args is not None:
        spec.update(probe_args=probe_args, probe_bytes=len(PROBE_SOURCE.encode()))
    args = json.dumps(spec)
    # -S: no site-packages to scan at start-up (the script needs the standard library only).
    return shell.join([python, "-S", "-c", LOCK_SOURCE, args])


def parse_event(line: str) -> Optional[LockEvent]:
    """One line of the holder's output; anything else (a login banner) is None."""
    kind, _, rest = line.strip().partition(" ")
    if kind not in ("waiting", "locked", "facts", "error"):
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
    return f"`fab {task}`" + (f" ({', '.join(parts)})" if parts else "")
