"""The target lock's holder script and the guard, run for real as local processes (python + flock)."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from labhop.target.guard import guarded
from labhop.target.layout import Layout
from labhop.remote import source
from labhop.target.lock import LockEvent, Owner, Query, describe_holder, holder_stdin, lock_command, parse_event
from labhop.target.probe import facts_from, probe_args


def start_holder(prefix: Path, task: str = "serve", pid: int = 41) -> subprocess.Popen:
    command = lock_command(sys.executable, Layout(str(prefix)), Owner(task=task, controller="laptop", pid=pid))
    proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write(holder_stdin(probe=False))  # what executor.hold_lock sends first, then holds open
    proc.stdin.flush()
    return proc


def next_event(proc: subprocess.Popen) -> LockEvent:
    line = proc.stdout.readline()
    event = parse_event(line)
    stderr = proc.stderr.read() if proc.poll() is not None else ""
    assert event is not None, f"not an event: {line!r} (stderr: {stderr})"
    return event


def assert_still_held(prefix: Path) -> None:
    """Another run's holder finds the lock taken: it says it waits (and is let go at once)."""
    waiter = start_holder(prefix)
    try:
        assert next_event(waiter).kind == "waiting"
    finally:
        waiter.stdin.close()
        waiter.wait(timeout=5)


def test_parse_event_ignores_banners() -> None:
    assert parse_event("Welcome to the cluster") is None
    assert parse_event('locked {"created_prefix": true, "waited": false}') == LockEvent(
        "locked", {"created_prefix": True, "waited": False})
    assert parse_event("error \"cannot write below /x: Read-only file system\"").value.startswith("cannot write")
    assert parse_event("waiting {broken") is None


def test_describe_holder() -> None:
    assert describe_holder({}) == "another labhop run"
    assert describe_holder({"task": "provision", "pid": 7, "controller": "laptop", "age": 12.7}) == \
        "`fab provision` (pid 7 on laptop, for 12s)"


def test_second_run_waits_says_who_and_gets_the_lock_when_the_first_ends(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    first = start_holder(prefix, "provision", 41)
    try:
        assert next_event(first) == LockEvent("locked", {"created_prefix": True, "waited": False})
        assert oct(prefix.stat().st_mode & 0o777) == "0o700"
        assert oct((prefix / "lock").stat().st_mode & 0o777) == "0o600"
        (prefix / "venv").mkdir()  # the first run did some work
        second = start_holder(prefix, "serve", 42)
        try:
            waiting = next_event(second)
            assert waiting.kind == "waiting"
            assert waiting.value["task"] == "provision" and waiting.value["pid"] == 41
            assert waiting.value["holder_pid"] == json.loads((prefix / "lock").read_text())["holder_pid"]
            time.sleep(0.5)
            assert second.poll() is None  # still waiting: the first holds it
            first.stdin.close()  # the first run ends (or dies: its channel closes the same way)
            assert first.wait(timeout=5) == 0
            assert next_event(second) == LockEvent("locked", {"created_prefix": False, "waited": True})
            assert json.loads((prefix / "lock").read_text())["task"] == "serve"
        finally:
            second.stdin.close()
            assert second.wait(timeout=5) == 0
    finally:
        first.kill()
        first.wait()


def test_a_waiter_whose_run_is_gone_stops_waiting_and_never_takes_the_lock(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    first = start_holder(prefix)
    try:
        assert next_event(first).kind == "locked"
        second = start_holder(prefix)
        assert next_event(second).kind == "waiting"
        second.stdin.close()
        assert second.wait(timeout=5) == 0
        assert second.stdout.read() == ""  # never printed "locked"
    finally:
        first.stdin.close()
        first.wait(timeout=5)


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    first = start_holder(prefix)
    assert next_event(first).kind == "locked"
    holder = json.loads((prefix / "lock").read_text())["holder_pid"]
    os.kill(holder, signal.SIGKILL)  # the kernel drops the flock with its holder: no stale lock
    first.wait(timeout=5)
    second = start_holder(prefix)
    try:
        assert next_event(second).kind == "locked"
    finally:
        second.stdin.close()
        second.wait(timeout=5)


def test_an_unwritable_prefix_is_one_error_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = start_holder(blocker / "prefix")
    event = next_event(proc)
    assert event.kind == "error"
    assert event.value == f"cannot create {blocker / 'prefix'}: Not a directory"
    assert proc.wait(timeout=5) == 3


def test_guard_passes_the_exit_status_through() -> None:
    # stdin stays open while the run lives (the executor never closes it for these commands)
    proc = subprocess.Popen(["sh", "-c", guarded(sys.executable, "echo out; exit 7")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.wait(timeout=20) == 7
        assert proc.stdout.read() == "out\n"
    finally:
        proc.stdin.close()


def test_guard_kills_the_command_and_its_children_when_the_run_goes_away(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    # A child of a child, like pip under `sh -c '{ pip ... } || pip ...'`.
    command = f"sh -c 'echo $$ > {pid_file}; sleep 60' & wait"
    proc = subprocess.Popen(["sh", "-c", guarded(sys.executable, command)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert os.path.exists(f"/proc/{grandchild}")
    proc.stdin.close()  # what sshd does when the controller dies or the connection is cut
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_first_run_that_wrote_nothing_leaves_no_trace_and_its_waiter_starts_over(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    first = start_holder(prefix, "provision", 41)
    assert next_event(first).value["created_prefix"] is True
    second = start_holder(prefix, "serve", 42)
    try:
        assert next_event(second).kind == "waiting"
        first.stdin.close()  # the first run failed before writing anything (a plan error)
        assert first.wait(timeout=5) == 0
        # The waiter locked the removed file, noticed, and made the prefix again for itself.
        assert next_event(second) == LockEvent("locked", {"created_prefix": True, "waited": True})
        assert json.loads((prefix / "lock").read_text())["task"] == "serve"
    finally:
        second.stdin.close()
        assert second.wait(timeout=5) == 0
    assert not prefix.exists()


def test_a_prefix_that_was_there_before_is_never_removed(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    holder = start_holder(prefix)
    assert next_event(holder).value["created_prefix"] is False
    holder.stdin.close()
    assert holder.wait(timeout=5) == 0
    assert sorted(p.name for p in prefix.iterdir()) == ["lock"]


def test_a_too_old_python_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    owner = Owner(task="provision", controller="laptop", pid=1)
    command = lock_command(sys.executable, Layout(str(prefix)), owner, min_python=(99, 0))
    done = subprocess.run(["sh", "-c", command], input=holder_stdin(probe=False), capture_output=True, text=True,
                          timeout=20)
    version = ".".join(map(str, sys.version_info[:3]))
    assert parse_event(done.stdout) == LockEvent(
        "error", f"{sys.executable} is Python {version}; labhop needs Python >= 99.0 on the target")
    assert done.returncode == 3
    assert not prefix.exists()


# -- lock and probe in one command (what provision/serve/stop run) ------------------------------

def start_probing_holder(prefix: Path, home: Path, probe: str) -> subprocess.Popen:
    command = lock_command(sys.executable, Layout(str(prefix)), Owner(task="provision", controller="laptop", pid=7),
                           probe_args=probe)
    proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HOME": str(home)})
    proc.stdin.write(holder_stdin(probe=True))  # what executor.hold_lock sends first
    proc.stdin.flush()
    return proc


def test_the_holder_probes_once_it_holds_the_lock_and_keeps_holding_it(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    holder = start_probing_holder(prefix, tmp_path, probe_args(str(prefix), str(tmp_path / "bin"), 8888, "127.0.0.1"))
    try:
        assert next_event(holder).kind == "locked"
        event = next_event(holder)
        assert event.kind == "facts"
        facts = facts_from(event.value)
        assert (facts.prefix, facts.home, facts.python_executable) == (str(prefix), str(tmp_path), sys.executable)
        assert facts.venv_exists is False and facts.port_free is not None
        assert_still_held(prefix)  # still held while the run applies its plan
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=10) == 0


def test_the_holder_runs_a_query_after_its_probe_in_the_same_command(tmp_path: Path) -> None:
    """serve --slurm: the probe, then slurm_query.py (no squeue here: it still answers), one command."""
    from labhop.slurm.job import parse_answer, query_args

    prefix = tmp_path / "prefix"
    (prefix / "slurm").mkdir(parents=True)
    query = Query(source("slurm_query.py"), tuple(query_args(str(prefix))))
    command = lock_command(sys.executable, Layout(str(prefix)), Owner(task="serve", controller="laptop", pid=7),
                           probe_args=probe_args(str(prefix), str(tmp_path / "bin")), query=query)
    spec = json.loads(shlex.split(command)[5])
    assert spec["query_bytes"] == len(source("slurm_query.py").encode()) and spec["query_args"] == list(query.args)
    holder = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,  # no Slurm on this PATH
                              env={**os.environ, "HOME": str(tmp_path), "PATH": "/nonexistent"})
    holder.stdin.write(holder_stdin(probe=True, query=query))
    holder.stdin.flush()
    try:
        assert [next_event(holder).kind for _ in range(2)] == ["locked", "facts"]
        event = next_event(holder)
        assert event.kind == "query"
        answer = parse_answer(event.value)
        assert answer.dir_exists and answer.sbatch is None and answer.record is None
        assert_still_held(prefix)  # still held after both
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=10) == 0


def test_a_query_that_fails_is_one_error_line_from_the_holder(tmp_path: Path) -> None:
    query = Query("raise RuntimeError('no luck')\n", ())
    prefix = tmp_path / "prefix"
    command = lock_command(sys.executable, Layout(str(prefix)), Owner(task="serve", controller="laptop", pid=7),
                           probe_args=probe_args(str(prefix), str(tmp_path / "bin")), query=query)
    done = subprocess.run(["sh", "-c", command], input=holder_stdin(probe=True, query=query), capture_output=True,
                          text=True, timeout=30, env={**os.environ, "HOME": str(tmp_path)})
    events = [parse_event(line) for line in done.stdout.splitlines()]
    assert [e.kind for e in events if e] == ["locked", "facts", "error"]
    assert events[-1] == LockEvent("error", "asking about the Slurm job failed: RuntimeError: no luck")


def test_a_probe_that_fails_is_one_error_line_from_the_holder(tmp_path: Path) -> None:
    holder = start_probing_holder(tmp_path / "prefix", tmp_path, "not json")
    try:
        assert next_event(holder).kind == "locked"
        event = next_event(holder)
        assert event.kind == "error"
        assert event.value == ("probing the target failed: json.decoder.JSONDecodeError: "
                               "Expecting value: line 1 column 1 (char 0)")
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=10) == 0


def test_a_run_gone_before_its_probe_arrived_leaves_nothing(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    command = lock_command(sys.executable, Layout(str(prefix)), Owner(task="serve", controller="laptop", pid=7),
                           probe_args=probe_args(str(prefix), str(tmp_path / "bin")))
    done = subprocess.run(["sh", "-c", command], input=holder_stdin(probe=True)[:len(source("lock.py")) + 100],
                          capture_output=True, text=True, timeout=20)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert not prefix.exists()


def test_a_run_gone_before_the_holder_itself_arrived_leaves_nothing(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    command = lock_command(sys.executable, Layout(str(prefix)), Owner(task="serve", controller="laptop", pid=7),
                           probe_args=probe_args(str(prefix), str(tmp_path / "bin")))
    done = subprocess.run(["sh", "-c", command], input=source("lock.py")[:100], capture_output=True, text=True,
                          timeout=20)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert not prefix.exists()


def test_no_code_travels_in_the_holders_argv(tmp_path: Path) -> None:
    """`ps` on the target shows the loader's few lines and the spec, not the holder or the probe."""
    command = lock_command("python3", Layout("~/.labhop"), Owner(task="serve", controller="laptop", pid=7),
                           probe_args=probe_args("~/.labhop", "~/.local/bin"))
    argv = shlex.split(command)
    assert argv[:3] == ["python3", "-S", "-c"]
    assert argv[3] == source("loader.py") and len(argv[3].splitlines()) <= 12
    assert int(argv[4]) == len(source("lock.py").encode())
    spec = json.loads(argv[5])
    assert spec["probe_bytes"] == len(source("probe.py").encode())
    assert len(argv) == 6
    for code in (source("lock.py"), source("probe.py")):
        assert not any(line in command for line in code.splitlines() if len(line.strip()) > 20)
