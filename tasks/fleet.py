"""Run tasks on many hosts at once, the Fabric way: an ``Executor`` subclass.

``fabric.yaml`` next to fabfile.py selects it (``tasks.executor_class``); fab loads
that project config wherever it finds the fabfile (``fab -r DIR`` too). Fabric's own
Executor runs ``-H a,b,c`` one host after the other and stops at the first failure.
This one:

- expands ``-H @group`` from inventory.toml (and drops repeated hosts);
- runs the hosts of each task concurrently, at most ``labhop.parallel`` at a time
  (fabric.yaml; ``$LABHOP_PARALLEL`` overrides), tasks one after the other;
- prefixes every line a host's task prints with ``[host]``;
- turns a failure into one line (never a traceback) that does not stop the other
  hosts; later tasks skip a host that failed;
- prints a summary table when several hosts ran, one JSON document on stdout with
  ``--json`` (human text then goes to stderr), and exits 0 / 1 / 2 (tasks/outcome.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import traceback
from typing import Any, Optional, TextIO

from fabric.executor import Executor
from fabric.tasks import ConnectionCall
from invoke.exceptions import Exit, UnexpectedExit

from . import cli
from .errors import LabhopError, UsageError
from .inventory import current_inventory
from .ssh.sshconfig import use_ssh_g
from .outcome import (EXIT_INTERRUPTED, HostResult, document, exit_code, failed, headline, skipped,
                      summary_table)

PARALLEL_ENV = "LABHOP_PARALLEL"
DEFAULT_PARALLEL = 8
DEFAULT_CONNECT_TIMEOUT = 15

_current = threading.local()  # .host: the host a worker thread is running a task for


def expand_hosts(hosts: list[Any], inventory: Any) -> list[Any]:
    """``@group`` -> its members (inventory.toml [groups]); other names as given; first occurrence wins."""
    seen: dict[str, None] = {}
    out: list[Any] = []
    for value in hosts:
        if isinstance(value, dict):  # Connection kwargs from @task(hosts=...): leave them to Fabric
            out.append(value)
            continue
        for name in inventory.expand(value.strip()):
            if name and name not in seen:
                seen[name] = None
                out.append(name)
    return out


def parallel_limit(config: Any, environ: Optional[dict[str, str]] = None) -> int:
    env = os.environ if environ is None else environ
    raw, where = env.get(PARALLEL_ENV), f"${PARALLEL_ENV}"
    if raw in (None, ""):
        raw, where = (config.get("labhop") or {}).get("parallel", DEFAULT_PARALLEL), "labhop.parallel in fabric.yaml"
    try:
        limit = int(str(raw))
    except ValueError:
        limit = 0
    if limit < 1:
        raise UsageError(f"{where}: {raw!r} is not a positive number of hosts")
    return limit


class FleetExecutor(Executor):  # type: ignore[misc]  # Fabric ships no types
    _cloning = threading.Lock()  # the run's config is copied for one host at a time

    def normalize_hosts(self, hosts: Any) -> list[dict[str, Any]]:
        try:
            names = expand_hosts(list(hosts or []), current_inventory())
        except LabhopError as exc:
            raise Exit(f"labhop: {exc}", code=exc.exit_code) from None
        normalized: list[dict[str, Any]] = super().normalize_hosts(names)
        return normalized

    def execute(self, *tasks: Any) -> dict[Any, Any]:
        # Every task's context shares this config: their edge leaves the --json document to us.
        setattr(self.config, cli.EXECUTOR_REPORTS, True)
        return self._execute(tasks)

    def _execute(self, tasks: tuple[Any, ...]) -> dict[Any, Any]:
        started = time.monotonic()
        try:
            limit = parallel_limit(self.config)
        except UsageError as exc:
            raise Exit(f"labhop: {exc}", code=exc.exit_code) from None
        self._default_connect_timeout()
        _keep_ssh_config_loaded_once(self.config)
        use_ssh_g(self.config)  # ssh_config as ssh reads it (Include, Match): tasks/ssh/sshconfig.py
        calls = self.expand_calls(self.normalize(tasks))
        json_mode = any(call.kwargs.get("json_") for call in calls)
        several = sum(isinstance(c, ConnectionCall) for c in calls) > len({c.task for c in calls})
        results: list[HostResult] = []
        returned: dict[Any, Any] = {}
        broken: set[str] = set()  # hosts on which a task failed: later tasks skip them
        # --json: stdout carries the document alone, whatever a task (with or without --json) prints.
        quiet = contextlib.redirect_stdout(sys.stderr) if json_mode else contextlib.nullcontext()
        try:
            with quiet:
                for wave in _waves(calls):
                    for call, result in zip(wave, self._run_wave(wave, broken, limit, json_mode, several)):
                        results.append(result)
                        returned[call.task] = result
                        if not result.ok:
                            broken.add(result.host)
                    if any(r.exit_code == EXIT_INTERRUPTED for r in results):
                        break  # Ctrl-C: no further task starts
        except KeyboardInterrupt:  # between waves, or a single host's task outside labhop's edge
            results.append(failed("-", "-", "interrupted", EXIT_INTERRUPTED))
        seconds = time.monotonic() - started
        human = sys.stderr if json_mode else sys.stdout
        if several:
            print(f"\n{headline(results, seconds)}\n{summary_table(results)}", file=human, flush=True)
        if json_mode:
            print(json.dumps(document(results, seconds=seconds), sort_keys=True), flush=True)
        code = exit_code(results)
        if code:
            raise Exit(code=code)
        return returned

    def _default_connect_timeout(self) -> None:
        """A dead host should fail in seconds, not after the kernel's ~2 minute SYN retries.

        Only when the user set no timeout (fab -T, timeouts.connect): Fabric refuses both at once.
        """
        if self.config.timeouts.connect is None and "timeout" not in (self.config.connect_kwargs or {}):
            self.config.timeouts.connect = (self.config.get("labhop") or {}).get("connect_timeout",
                                                                                 DEFAULT_CONNECT_TIMEOUT)

    def _run_wave(self, wave: list[Any], broken: set[str], limit: int, json_mode: bool,
                  several: bool) -> list[HostResult]:
        # Config loading mutates the shared config: do it here, once, before any thread starts.
        self.config.load_collection(self.collection.configuration(wave[0].called_as))
        self.config.load_shell_env()
        jobs: list[tuple[Any, Any]] = []
        results: list[Optional[HostResult]] = [None] * len(wave)
        for index, call in enumerate(wave):
            host = _host_of(call)
            if host in broken:
                results[index] = skipped(host, _name(call), "an earlier task failed on this host")
                continue
            jobs.append((index, call))
        if len(jobs) <= 1 and not several:  # one host: run as Fabric would, in this thread, unprefixed
            for index, call in jobs:
                results[index] = self._make_and_run(call, prefixed=False, own_config=False)
            return [r for r in results if r is not None]

        out, err = sys.stdout, sys.stderr
        lock = threading.Lock()
        sys.stdout = _HostLines(err if json_mode else out, lock)  # --json: stdout is the document's alone
        sys.stderr = _HostLines(err, lock)
        pending = list(reversed(jobs))
        started = time.monotonic()

        def worker() -> None:
            while True:
                try:
                    index, call = pending.pop()
                except IndexError:
                    return
                results[index] = self._make_and_run(call, prefixed=True)

        threads = [threading.Thread(target=worker, name=f"labhop-fleet-{n}", daemon=True)
                   for n in range(min(limit, len(jobs)))]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:  # the hosts still at work are abandoned (daemon threads end with fab)
            for index, call in jobs:
                if results[index] is None:
                    results[index] = failed(_host_of(call), _name(call), "interrupted", EXIT_INTERRUPTED,
                                            seconds=time.monotonic() - started)
        finally:
            sys.stdout, sys.stderr = out, err
        return [r for r in results if r is not None]

    def _make_and_run(self, call: Any, *, prefixed: bool, own_config: bool = True) -> HostResult:
        # Made by the worker that runs it, so one host's Connection (ssh_config lookups, a config
        # clone per jump host: ~10 ms of CPU) does not hold back the hosts already at work.
        try:  # a Connection is only described here; connecting happens in the task
            context = call.make_context(self._config_for_one_host() if own_config else self.config)
        except Exception as exc:  # e.g. a malformed host string
            host = _host_of(call)
            bad = failed(host, _name(call), f"bad host {host!r}: {exc}", 2)
            print(f"[{host}] failed: {bad.error}" if prefixed else f"labhop: {host}: {bad.error}",
                  file=sys.stderr, flush=True)
            return bad
        return self._run_call(call, context, prefixed=prefixed)

    def _config_for_one_host(self) -> Any:
        """A copy of the run's config for one host's Connection. Fabric writes the host's ssh_config
        IdentityFile into the config it is given (``resolve_connect_kwargs``): on the one shared
        config, each host offered every earlier host's keys too (past sshd's MaxAuthTries with
        per-host keys), and a write rebuilds the config while other hosts' threads read it."""
        with self._cloning:
            return self.config.clone()

    def _run_call(self, call: Any, context: Any, *, prefixed: bool) -> HostResult:
        host, name = _host_of(call), _name(call)
        _current.host = host
        started = time.monotonic()
        try:
            value = call.task(context, *call.args, **call.kwargs)
        except cli.HostFailed as exc:
            result = failed(host, name, exc.reason, exc.code)
        except Exit as exc:
            if not exc.code:  # Exit(0) is a task's way of saying "done early"
                result = HostResult(host=host, task=name, result="done")
            else:
                result = failed(host, name, str(exc.message or f"exit status {exc.code}"), exc.code)
        except UnexpectedExit as exc:
            result = failed(host, name, f"`{exc.result.command}` exited {exc.result.exited}")
        except Exception as exc:  # a bug or a fault nobody named: one line (fab -d shows the traceback)
            if self.core[0].args.debug.value:
                traceback.print_exc()
            result = failed(host, name, f"unexpected {type(exc).__name__}: {exc}")
        else:
            result = value if isinstance(value, HostResult) else HostResult(host=host, task=name, result="done")
            result.host = host
        finally:
            for stream in (sys.stdout, sys.stderr):
                if isinstance(stream, _HostLines):
                    stream.end_thread()
            _current.host = None
        result.seconds = time.monotonic() - started  # the whole task on this host, connecting included
        if not result.ok:
            line = f"[{host}] failed: {result.error}" if prefixed else f"labhop: {host}: {result.error}"
            print(line, file=sys.stderr, flush=True)
        return result


class _HostLines:
    """Stands in for sys.stdout / sys.stderr while hosts run at once: each worker thread's
    text is collected line by line and written whole, under its host's ``[host]`` prefix
    (lines the Reporter already prefixed are left as they are). An explicit ``flush()`` of
    a partial line shows it at once: that is how a question (a host key to accept) appears
    before its answer is read."""

    def __init__(self, real: TextIO, lock: threading.Lock) -> None:
        self._real = real
        self._lock = lock
        self._partial: dict[int, str] = {}
        self._midline: set[int] = set()  # threads whose current line was shown in part (prefix written)

    def write(self, text: str) -> int:
        host = getattr(_current, "host", None)
        if host is None:
            with self._lock:
                self._real.write(text)
            return len(text)
        key = threading.get_ident()
        *lines, rest = (self._partial.pop(key, "") + text).split("\n")
        if rest:
            self._partial[key] = rest
        if lines:
            self._emit(key, host, "".join(self._prefixed(key, host, line) + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        host = getattr(_current, "host", None)
        key = threading.get_ident()
        rest = self._partial.pop(key, "")
        if host is not None and rest:
            text = self._prefixed(key, host, rest)
            self._midline.add(key)
            self._emit(key, host, text)
        else:
            with self._lock:
                self._real.flush()

    def end_thread(self) -> None:
        key = threading.get_ident()
        rest = self._partial.pop(key, "")
        host = getattr(_current, "host", None)
        if rest and host:
            self._emit(key, host, self._prefixed(key, host, rest) + "\n")
        self._midline.discard(key)

    def _prefixed(self, key: int, host: str, line: str) -> str:
        if key in self._midline:  # the rest of a line whose start (and prefix) is already out
            self._midline.discard(key)
            return line
        mark = f"[{host}]"
        return line if line.startswith(mark) else f"{mark} {line}"

    def _emit(self, key: int, host: str, text: str) -> None:
        with self._lock:
            self._real.write(text)
            self._real.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno...
        return getattr(self._real, name)


def _keep_ssh_config_loaded_once(config: Any) -> None:
    """Stop Fabric from parsing the ssh_config files again into the run's shared config.

    Fabric 3.2's ``Config.clone()`` ends with ``self.load_ssh_config()`` (meant for the new copy),
    so each clone appends the files' blocks to the *source* once more. Every Connection with a
    ProxyJump clones the config it was given, the run's one shared config: behind one bastion
    the 32nd host's lookups scanned 32 copies of the file (profiled: building 32 Connections took
    2.4 s of a 5 s dry run; 0.4 s once the file is parsed once). The files are loaded by now
    (``fab -S``, or the user's and the system's); a config marked as given its SSHConfig object
    keeps it, and its clones still copy it.
    """
    if hasattr(config, "_given_explicit_object") and hasattr(config, "base_ssh_config"):
        config._given_explicit_object = True


def _waves(calls: list[Any]) -> list[list[Any]]:
    """Consecutive calls of the same task (one per host) run together; tasks run in the order given."""
    waves: list[list[Any]] = []
    for call in calls:
        if waves and isinstance(call, ConnectionCall) and isinstance(waves[-1][0], ConnectionCall) \
                and waves[-1][0].task is call.task and waves[-1][0].kwargs == call.kwargs:
            waves[-1].append(call)
        else:
            waves.append([call])
    return waves


def _host_of(call: Any) -> str:
    return (getattr(call, "init_kwargs", None) or {}).get("host") or "local"


def _name(call: Any) -> str:
    name: str = call.called_as or call.task.name
    return name
