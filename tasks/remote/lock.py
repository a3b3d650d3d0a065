"""Holds labhop's lock on one target prefix while a run goes on, and probes the host once it has it.

Runs on the target's python (any version from 2.7 on: it refuses one older than labhop needs
before anything is written). The controller (tasks/target/lock.py) starts it through loader.py,
so that no code travels in argv: stdin carries this file, then, if the spec says so, probe_bytes
of the probe (probe.py), then nothing until the run ends. By hand, on a target:

    python3 lock.py '{"prefix": "~/.labhop", "path": "~/.labhop/lock", "owner": {}, "min_python": [3, 9]}'

holds the lock until you press Ctrl-D. SPEC_JSON (argv[1]): prefix, path (the lock file), owner (shown
to a run that has to wait), min_python, and optionally probe_args (probe.py's argument) and probe_bytes,
then query_args (a list) and query_bytes: a second script read from stdin after the probe and run after
it, in the same interpreter (``serve --slurm``: slurm_query.py), so that a run asks everything in one command.

Prints one line per event: "waiting <owner json>", "locked <json>", "facts <json>", "query <json>",
"error <text>".
The lock is an flock held by this process until its stdin reaches EOF: that comes when the run
releases it, and equally when the run dies (sshd closes the channel), so the lock never goes
stale. A first run that fails leaves nothing behind: the prefix this holder created is removed on
release if the lock file is all it holds. A waiter checks that the file it locked is still the
one at the path (that removal unlinks it) and starts over if not.
"""
import errno
import json
import os
import sys
import time


def say(kind, value):
    sys.stdout.write(kind + " " + json.dumps(value) + "\n")
    sys.stdout.flush()


def expand(path):
    return os.path.join(os.path.expanduser("~"), path[2:]) if path.startswith("~/") else os.path.expanduser(path)


def read_exactly(size):
    """``size`` bytes of stdin, or None when the run went away before sending them all."""
    chunks, left = [], size
    while left > 0:
        chunk = os.read(sys.stdin.fileno(), left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def gone():
    """The run that started us gave up or died: stop waiting, never take the lock for nobody."""
    import select
    return bool(select.select([sys.stdin], [], [], 0.2)[0]) and not os.read(sys.stdin.fileno(), 65536)


def main(argv):
    spec = json.loads(argv[1])
    need = tuple(spec["min_python"])
    if sys.version_info[:len(need)] < need:
        say("error", "%s is Python %s; labhop needs Python >= %s on the target" % (
            sys.executable, ".".join(map(str, sys.version_info[:3])), ".".join(map(str, need))))
        sys.exit(3)
    prefix, path = expand(spec["prefix"]), expand(spec["path"])
    probe_source = query_source = None
    if spec.get("probe_bytes"):
        data = read_exactly(spec["probe_bytes"])
        if data is None:
            sys.exit(0)  # the run went away before it sent the probe
        probe_source = data.decode("utf-8")
    if spec.get("query_bytes"):
        data = read_exactly(spec["query_bytes"])
        if data is None:
            sys.exit(0)
        query_source = data.decode("utf-8")
    fd, created, waited = acquire(prefix, path)
    owner = dict(spec["owner"], holder_pid=os.getpid(), since=time.time())
    try:  # best effort: who holds the lock is for messages only (a full disk must not stop us here)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, 0)
        os.write(fd, json.dumps(owner).encode())
    except OSError:
        pass
    say("locked", {"created_prefix": created, "waited": waited})
    if probe_source is not None:
        run_script(probe_source, "probe.py", [spec["probe_args"]], "facts", "probing the target failed")
    if query_source is not None:
        run_script(query_source, "query.py", list(spec.get("query_args") or []), "query",
                   "asking about the Slurm job failed")
    while os.read(sys.stdin.fileno(), 65536):
        pass
    try:
        if created and os.listdir(prefix) == [os.path.basename(path)]:  # the run wrote nothing: leave no trace
            os.unlink(path)
            os.rmdir(prefix)
    except OSError:
        pass


def fail(what, exc, prefix):
    say("error", "cannot %s %s: %s" % (what, getattr(exc, "filename", None) or prefix,
                                       os.strerror(exc.errno) if exc.errno else exc))
    sys.exit(3)


def acquire(prefix, path):
    """Wait for the lock on ``path`` (creating ``prefix`` 0700 if needed): (fd, created prefix, waited)."""
    import fcntl
    os.umask(0o077)
    created = waited = False
    while True:
        if not os.path.isdir(prefix):
            try:
                os.makedirs(prefix, 0o700)
                created = True
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    fail("create", exc, prefix)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            # A read-only prefix that already has its lock file can still be locked (and probed):
            # whether anything needs writing there is for the plan to say.
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                fail("write below", exc, prefix)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    return fd, created, waited
            except OSError:
                pass
            os.close(fd)
            continue  # we locked a file its holder removed on the way out: again
        except (IOError, OSError) as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                fail("lock", exc, prefix)
        if not waited:
            try:
                holder = json.loads(os.read(fd, 4096).decode() or "{}")
                holder["age"] = time.time() - holder.get("since", time.time())  # the target's clock only
            except (OSError, ValueError, TypeError, AttributeError):
                holder = {}
            say("waiting", holder)
            waited = True
        os.close(fd)
        if gone():
            sys.exit(0)


def run_script(source, name, args, event, what):
    """Run a script (probe.py, slurm_query.py; ``args``: its arguments) in this interpreter (no second
    start-up) and pass the last JSON line it prints on as ``event``."""
    import io
    import traceback
    captured, real = io.StringIO(), sys.stdout
    sys.stdout, sys.argv, failure = captured, [name] + args, None
    try:
        exec(compile(source, name, "exec"), {"__name__": "__main__"})
    except SystemExit:
        pass
    except Exception:
        failure = traceback.format_exc().strip().splitlines()[-1]
    sys.stdout = real
    lines = [line for line in captured.getvalue().splitlines() if line.startswith("{")]
    if failure or not lines:
        say("error", "%s: %s" % (what, failure or "it printed nothing"))
    else:
        sys.stdout.write(event + " " + lines[-1] + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv)
