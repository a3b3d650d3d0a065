"""The one place that talks to a target: probe facts, apply planned steps, over ``c.run``.

``c`` is an invoke ``Context`` (local runs) or a Fabric ``Connection`` (``-H``);
both offer ``run``. Every command is wrapped in ``sh -c`` so that plans speak
POSIX sh whatever the user's login shell is, and every payload (file bodies,
the probe script) travels on stdin, never in an argv.
"""
from __future__ import annotations

import contextlib
import io
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from invoke.exceptions import Failure, UnexpectedExit

from .target import lock
from . import shell
from .errors import LabhopError
from .ssh.faults import describe_connection_error
from .target.probe import MIN_PYTHON, HostFacts, parse_facts, probe_args, probe_source
from .settings import HostSettings
from .steps import Command, Skip, Step, Transfer, Upload, WriteFile


class _Payload(io.StringIO):
    """stdin for ``c.run``: invoke reads a non-terminal stream one byte per 10 ms poll,
    which made a 4 KB payload take 40 s; hand it over in large chunks instead."""

    def read(self, size: Optional[int] = -1) -> str:
        return super().read(-1 if size is None or size < 0 else max(size, 1 << 16))


def payload(text: Optional[str]) -> Any:
    return _Payload(text) if text is not None else False


@dataclass
class StepResult:
    step: Step
    changed: bool
    seconds: float = 0.0
    note: str = ""  # a Command's own last line (Command.note)


@dataclass
class ApplyResult:
    results: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def changed(self) -> list[StepResult]:
        return [r for r in self.results if r.changed]


# What paramiko reports for a channel that closed without an exit status: the connection went away.
CONNECTION_LOST = -1


def run(c: Any, command: str, *, stdin: Optional[str] = None, what: str = "command") -> Any:
    """Run ``command`` under ``sh -c``; raise ``LabhopError`` with stderr's tail on failure."""
    wrapped = "sh -c " + shell.q(command)
    kwargs: dict[str, Any] = {"hide": True, "warn": True, "pty": False,
                              "in_stream": payload(stdin)}
    try:
        result = c.run(wrapped, **kwargs)
    except (UnexpectedExit, Failure) as exc:  # warn=True makes these rare; keep the result's words
        raise LabhopError(f"{what} failed: {_tail(exc.result.stderr)}") from None
    except Exception as exc:  # connection-level faults: name them in one line
        raise LabhopError(describe_connection_error(exc)) from None
    if result.exited == CONNECTION_LOST:
        raise LabhopError(f"{what}: the SSH connection was lost before it finished; run the task again, "
                          f"it picks up where this one stopped")
    if result.exited != 0:
        detail = _tail(result.stderr) or _tail(result.stdout) or f"exit status {result.exited}"
        raise LabhopError(f"{what} failed (exit {result.exited}): {detail}")
    return result


def probe(c: Any, settings: HostSettings, *, port: Optional[int] = None, ip: Optional[str] = None,
          install: bool = False, root_dir: Optional[str] = None, scan_from: Optional[int] = None) -> HostFacts:
    """All facts in one round trip: the probe script goes to the target's python3 on stdin.

    ``install``: the caller may install packages, so the probe also checks (briefly) whether
    the target reaches its package index when something is missing, unless told it is offline.
    """
    args = probe_arguments(settings, port=port, ip=ip, install=install, root_dir=root_dir, scan_from=scan_from)
    command = f"{shell.q(settings.python)} - {shell.q(args)}"
    try:
        result = c.run("sh -c " + shell.q(command), hide=True, warn=True, pty=False,
                       in_stream=payload(probe_source()))
    except Exception as exc:
        raise LabhopError(describe_connection_error(exc)) from None
    if result.exited == 127:
        raise LabhopError(no_python(settings.python))
    if result.exited == CONNECTION_LOST:
        raise LabhopError("probing the target: the SSH connection was lost; run the task again")
    if result.exited != 0:
        raise LabhopError(f"probing the target failed (exit {result.exited}): {_tail(result.stderr)}")
    return parse_facts(result.stdout)


def probe_arguments(settings: HostSettings, *, port: Optional[int] = None, ip: Optional[str] = None,
                    install: bool = False, root_dir: Optional[str] = None, scan_from: Optional[int] = None) -> str:
    """The probe's argv[1] (see ``probe``), also handed to the lock holder that probes once locked.

    ``root_dir``: check that it is a directory; ``scan_from`` (serve with no port named): find the first
    free port from the one in the server's config, else from ``scan_from``."""
    from .jupyter_config import NOTEBOOK_APP_PINS, PORT_LINE
    from .kernels import probe_request
    from .packages import wanted_packages
    from .serving import PORT_SCAN

    scan = {"from": scan_from, "count": PORT_SCAN, "setting": PORT_LINE} if scan_from else None
    return probe_args(settings.prefix, settings.bin_dir, port, ip, index=install and not settings.offline,
                      packages=tuple(wanted_packages(settings)) if install else (),
                      kernels=probe_request(settings) if install else None, root_dir=root_dir, scan=scan,
                      notebook_app_keys=NOTEBOOK_APP_PINS)


def apply(c: Any, steps: list[Step], *, dry_run: bool = False,
          on_step: Optional[Callable[[StepResult], None]] = None,
          on_progress: Optional[Callable[[str], None]] = None) -> ApplyResult:
    """Apply steps in order; stop at the first failure (LabhopError names the step)."""
    outcome = ApplyResult()
    started = time.monotonic()
    for step in steps:
        t0 = time.monotonic()
        note = ""
        if isinstance(step, Skip) or dry_run:
            result = StepResult(step, changed=False if isinstance(step, Skip) else True)
        else:
            if isinstance(step, WriteFile):
                run(c, shell.atomic_write(step.path, step.mode, len(step.content.encode())), stdin=step.content,
                    what=step.description)
            elif isinstance(step, Command):
                done = run(c, step.command, stdin=step.stdin, what=step.description)
                note = _tail(done.stdout, 1) if step.note else ""
            elif isinstance(step, Upload):
                upload(c, step, on_progress)
            result = StepResult(step, changed=True, seconds=time.monotonic() - t0, note=note)
        outcome.results.append(result)
        if on_step:
            on_step(result)
    outcome.seconds = time.monotonic() - started
    return outcome


class _Meter:
    """Progress of an upload: megabytes, seconds, rate; at most one line a second, and the last."""

    def __init__(self, step: Upload, say: Optional[Callable[[str], None]]) -> None:
        self.say, self.total, self.done = say, step.size, 0
        self.started = self.last = time.monotonic()

    def add(self, size: int) -> None:
        self.done += size
        now = time.monotonic()
        if self.say and (now - self.last >= 1.0 or self.done >= self.total):
            self.last = now
            elapsed = now - self.started
            rate = self.done / elapsed / 1e6 if elapsed > 0 else 0.0
            self.say(f"  pushing  {self.done / 1e6:.1f} of {self.total / 1e6:.1f} MB, {elapsed:.1f}s ({rate:.1f} MB/s)")


UPLOAD_CHUNK = 1 << 20


def upload(c: Any, step: Upload, say: Optional[Callable[[str], None]] = None) -> None:
    """Send ``step.files`` as bytes: SFTP on a Fabric connection, a file copy for local runs.

    Each file is appended to from its ``offset`` (what a cut connection left), so a
    re-run resumes; checking what arrived is the plan's next step.
    """
    run(c, shell.mkdir_private(step.directory), what=step.description)
    meter = _Meter(step, say)
    shared = hasattr(c, "write_file")  # an OpenSSH master (tasks/ssh/runner.py): cat on the target
    sftp = c.sftp() if hasattr(c, "sftp") and not shared else None
    for transfer in step.files:
        try:
            if shared:
                c.write_file(transfer.dest, _metered(_read_from(transfer.sources, transfer.offset), meter),
                             append=bool(transfer.offset))
                continue
            with _open_dest(sftp, transfer) as dest:
                for chunk in _read_from(transfer.sources, transfer.offset):
                    dest.write(chunk)
                    meter.add(len(chunk))
        except FileNotFoundError as exc:
            raise LabhopError(f"{step.description}: {exc.filename} is missing on this machine") from None
        except OSError as exc:
            raise LabhopError(f"{step.description} failed at {transfer.dest}: {exc.strerror or exc}") from None
        except Exception as exc:  # connection faults from paramiko
            raise LabhopError(describe_connection_error(exc)) from None


def _metered(chunks: Iterator[bytes], meter: _Meter) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk
        meter.add(len(chunk))


def _read_from(paths: tuple[str, ...], offset: int) -> Iterator[bytes]:
    """The concatenation of ``paths``, from byte ``offset`` on."""
    for path in paths:
        with open(path, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            if offset >= size:
                offset -= size
                continue
            src.seek(offset)
            offset = 0
            while chunk := src.read(UPLOAD_CHUNK):
                yield chunk


def _open_dest(sftp: Any, transfer: Transfer) -> Any:
    # Created 0600 like every file below the prefix (sftp-server and open() would apply umask 022).
    dest: Any
    if sftp is not None:
        dest = sftp.open(transfer.dest, "r+b" if transfer.offset else "wb")
        if not transfer.offset:
            dest.chmod(0o600)
        dest.set_pipelined(True)  # do not wait for each write's reply
    else:
        flags = os.O_WRONLY | (0 if transfer.offset else os.O_CREAT | os.O_TRUNC)
        dest = os.fdopen(os.open(transfer.dest, flags, 0o600), "wb")
    if transfer.offset:
        dest.seek(transfer.offset)
    return dest


def read_file_tail(c: Any, path: str, lines: int) -> str:
    result = run(c, f"tail -n {int(lines)} {shell.q(path)} 2>/dev/null || true", what=f"read {path}")
    tail: str = result.stdout
    return tail


def _tail(text: str, lines: int = 3) -> str:
    kept = [line for line in (text or "").strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)


# -- the target lock (tasks/target/lock.py): held by a process on the target for the whole run -----------

class _HoldOpen:
    """stdin for the lock holder: its payload (the probe) at once, then nothing to read (None)
    until released, then EOF ("")."""

    def __init__(self, payload: str) -> None:
        self.released = threading.Event()
        self.payload: Optional[str] = payload
        self.whole = payload

    def rewind(self) -> None:
        """From the start again (a target that refused the session: tasks/ssh/runner.py)."""
        self.payload = self.whole

    def read(self, size: Optional[int] = -1) -> Optional[str]:
        if self.payload:
            text, self.payload = self.payload, None
            return text
        return "" if self.released.is_set() else None


class _Lines:
    """out_stream for the lock holder: hands each complete line to ``on_line``."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.buffer = ""
        self.on_line = on_line

    def write(self, text: str) -> None:
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            self.on_line(line)

    def flush(self) -> None:
        pass


# How long a holder that has the lock may take to print the facts it probed.
PROBE_WAIT = 120.0


@contextlib.contextmanager
def hold_lock(c: Any, command: str, *, python: str, wait: float, on_wait: Callable[[Any], None],
              query: Optional[lock.Query] = None) -> Iterator[dict[str, Any]]:
    """Run the lock holder (``lock.lock_command`` with ``probe_args``) in a thread over ``c``, its source and
    the probe's first on its stdin; yield once it holds the lock and has probed (the facts' JSON under "facts"),
    and, with ``query`` (given to ``lock_command`` too), run that script (its JSON under "query").

    Leaving the block closes the holder's stdin, which releases the lock; so does this
    process dying (the channel closes), which is what keeps the lock from going stale.
    """
    events: "queue.Queue[lock.LockEvent]" = queue.Queue()
    stdin = _HoldOpen(lock.holder_stdin(probe=True, query=query))
    stderr = io.StringIO()
    outcome: dict[str, Any] = {}

    def on_line(line: str) -> None:
        event = lock.parse_event(line)
        if event is not None:
            events.put(event)

    def hold() -> None:
        try:
            outcome["result"] = c.run("sh -c " + shell.q(command), hide=False, warn=True, pty=False,
                                      in_stream=stdin, out_stream=_Lines(on_line), err_stream=stderr)
        except BaseException as exc:  # reported by the waiting thread, in one line
            outcome["error"] = exc
        finally:
            events.put(lock.LockEvent("ended", None))

    thread = threading.Thread(target=hold, name="labhop-lock", daemon=True)
    thread.start()
    deadline = time.monotonic() + wait
    holder: dict[str, Any] = {}
    locked: Optional[dict[str, Any]] = None
    try:
        while True:
            try:
                event = events.get(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() < deadline:
                    continue
                if locked is not None:
                    raise LabhopError(f"probing the target: no answer within {int(PROBE_WAIT)}s") from None
                raise LabhopError(f"gave up after {int(wait)}s waiting for the target's lock, held by "
                                  f"{lock.describe_holder(holder)}") from None
            if event.kind == "locked":
                locked = dict(event.value)
                deadline = time.monotonic() + PROBE_WAIT
            elif event.kind == "facts" and locked is not None:
                locked["facts"] = event.value
                if query is None:
                    break
            elif event.kind == "query" and locked is not None and "facts" in locked:
                locked["query"] = event.value
                break
            elif event.kind == "waiting":
                holder = event.value if isinstance(event.value, dict) else {}
                on_wait(holder)
            elif event.kind == "error":
                raise LabhopError(str(event.value))
            elif event.kind == "ended":
                raise LabhopError(_lock_failure(outcome, stderr.getvalue(), python))
        yield locked
    finally:
        stdin.released.set()
        thread.join(timeout=10)


def no_python(python: str) -> str:
    need = ".".join(map(str, MIN_PYTHON))
    return (f"no {python} on the target (labhop needs Python >= {need} there; "
            f"set `python` in inventory.toml if it lives elsewhere)")


def _lock_failure(outcome: dict[str, Any], stderr: str, python: str) -> str:
    if "error" in outcome:
        return describe_connection_error(outcome["error"])
    result = outcome.get("result")
    exited = getattr(result, "exited", None)
    if exited == 127:
        return no_python(python)
    return f"taking labhop's lock on the target failed (exit {exited}): {_tail(stderr) or 'no output'}"
