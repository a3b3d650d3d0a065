"""The task edge: turn a Fabric/invoke context into a labhop session, and errors into one line.

Domain errors become ``invoke.Exit`` (message on stderr, exit code, no traceback).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from invoke.exceptions import Exit

from .ssh.connect import Target, open_chain, resolve_target, use_openssh
from .errors import LabhopError, UsageError
from .executor import ApplyResult, apply, hold_lock, probe, probe_arguments
from .inventory import current_inventory
from .target.layout import Layout
from .target.lock import LOCK_WAIT, Owner, Query, describe_holder, lock_command
from .outcome import HostResult, applied, document, failed
from .plan import Plan
from .target.probe import HostFacts, facts_from
from .report import Reporter
from . import shell
from .steps import Command, Skip, Step
from .settings import HostSettings, resolve_settings


@dataclass
class Session:
    target: Target
    settings: HostSettings
    report: Reporter
    task: str = ""
    problems: list[str] = field(default_factory=list)  # inventory entries the last plan could not honour
    # What this session holds until its task ends (the target's lock): closed by ``edge``.
    held: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    # The prefix the lock created on a first run (the probe then found it): reported as the plan's first step.
    created_prefix: Optional[str] = None
    # What the lock holder's query script printed (``lock_and_probe(query=...)``), else None.
    query_answer: Optional[Any] = None

    @property
    def c(self) -> Any:
        return self.target.c

    def connect(self) -> None:
        """Open the SSH chain (for a session opened with ``connect=False``, once its flags are checked)."""
        if not self.target.is_local:
            open_chain(self.target)

    def lock_and_probe(self, task: str, *, dry_run: bool = False, port: Optional[int] = None,
                       ip: Optional[str] = None, install: bool = False, root_dir: Optional[str] = None,
                       scan_from: Optional[int] = None, query: Optional[Query] = None) -> HostFacts:
        """Take the target's lock (tasks/target/lock.py) until the task ends, and probe the host, in one
        command: runs on one target are serialized from their probe to their last step.
        ``query``: a script the holder runs after the probe, in the same command; its JSON in ``query_answer``.
        A dry run changes nothing and takes no lock: it only probes (``query_answer`` stays None)."""
        if dry_run:
            return probe(self.c, self.settings, port=port, ip=ip, install=install, root_dir=root_dir,
                         scan_from=scan_from)
        owner = Owner(task=task, controller=socket.gethostname(), pid=os.getpid())
        layout = Layout(self.settings.prefix)

        def waiting(holder: dict[str, Any]) -> None:
            self.report.say(f"waiting: {describe_holder(holder)} is working on this target; "
                            f"this run goes on when it is done")

        command = lock_command(self.settings.python, layout, owner,
                               probe_args=probe_arguments(self.settings, port=port, ip=ip, install=install,
                                                          root_dir=root_dir, scan_from=scan_from), query=query)
        info = self.held.enter_context(hold_lock(
            self.c, command, python=self.settings.python,
            wait=float(os.environ.get("LABHOP_LOCK_WAIT") or LOCK_WAIT), on_wait=waiting, query=query))
        facts = facts_from(info["facts"])
        self.query_answer = info.get("query")
        self.created_prefix = facts.prefix if info.get("created_prefix") else None
        return facts

    def apply(self, plan: Plan, task: str, *, dry_run: bool = False) -> ApplyResult:
        for warning in plan.warnings:
            self.report.warn(warning)
        self.report.dry_run = dry_run
        self.task = task
        outcome = apply(self.c, self._with_prefix_step(plan.steps), dry_run=dry_run, on_step=self.report.step,
                        on_progress=self.report.say)
        self.report.summary(task, outcome)
        for note in plan.notes:
            self.report.say(note)
        if len(plan.problems) > 1:  # a single one is the task's error line (``result``)
            for problem in plan.problems:
                self.report.warn(problem)
        self.problems = list(plan.problems)
        return outcome

    def _with_prefix_step(self, steps: list[Step]) -> list[Step]:
        """A first run's lock made the prefix before the probe looked: show (and count) that as the step
        that creates it, not as "exists" (its mkdir -p and chmod are a no-op by now)."""
        prefix = self.created_prefix
        if prefix is None:
            return steps
        create = Command(f"create {prefix} (0700)", shell.mkdir_private(prefix))
        return [create, *(s for s in steps if not (isinstance(s, Skip) and s.description == f"directory {prefix}"))]

    def result(self, outcome: ApplyResult, **data: Any) -> HostResult:
        """What the last ``apply`` did here, for the fleet summary and ``--json``.
        Inventory entries it could not honour (said one line each already) make it a usage error."""
        if len(self.problems) == 1:
            raise UsageError(f"{self.problems[0]} (everything else is done)")
        if self.problems:
            raise UsageError(f"{len(self.problems)} entries of `kernels` / --kernel cannot be kernels (each said "
                             f"above); everything else is done")
        changed = [f"{r.step.description} {r.note}".strip() for r in outcome.changed]
        return applied(self.target.name, self.task, changed, len(outcome.results) - len(changed),
                       dry_run=self.report.dry_run, seconds=outcome.seconds, **data)


def open_session(c: Any, *, json_out: bool = False, connect: bool = True, **flags: Any) -> Session:
    """Resolve the host (inventory first, then ssh_config) and its settings (flags over inventory).

    ``json_out``: stdout is reserved for the ``--json`` document, so human text goes to stderr.
    ``connect``: open the SSH chain now, hop by hop, so a failure names its hop (jump host or target).
    """
    inventory = current_inventory()
    target = resolve_target(c, inventory)
    settings = resolve_settings(target.entry, **flags)  # bad flags are usage errors: before any connection
    if not target.is_local:
        use_openssh(target)
    if connect and not target.is_local:
        open_chain(target)
    report = Reporter(target.name, sys.stderr) if json_out else Reporter(target.name)
    session = Session(target=target, settings=settings, report=report)
    getattr(_task_sessions, "open", []).append(session)
    return session


# The sessions a task opened in this thread (the fleet runs hosts in threads): released by ``edge``.
_task_sessions = threading.local()


def _run_and_release(func: Callable[..., Any], c: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a task; whatever its sessions hold (the target's lock) is released when it ends, however."""
    outer = getattr(_task_sessions, "open", None)
    _task_sessions.open = []
    try:
        return func(c, *args, **kwargs)
    finally:
        opened, _task_sessions.open = _task_sessions.open, outer
        for session in reversed(opened):
            session.held.close()


def host_label(c: Any) -> str:
    return getattr(c, "original_host", None) or "local"


class HostFailed(Exit):
    """A task failed on one host: ``reason`` is the one line; Fabric prints ``message``."""

    def __init__(self, host: str, reason: str, code: int) -> None:
        super().__init__(f"labhop: {host}: {reason}", code=code)
        self.host = host
        self.reason = reason


# Set in its run's config by labhop.fleet.FleetExecutor (selected in fabric.yaml): it collects
# the tasks' results and prints the --json document itself. Without it, the edge prints it.
EXECUTOR_REPORTS = "labhop_executor_reports"


def executor_reports(c: Any) -> bool:
    """Does the executor running this task print its --json document (tasks/fleet.py)?"""
    return bool(getattr(getattr(c, "config", None), EXECUTOR_REPORTS, False))


def edge(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a task: LabhopError -> one line on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(c: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = _run_and_release(func, c, *args, **kwargs)
        except LabhopError as exc:
            error = HostFailed(host_label(c), str(exc), exc.exit_code)
        except KeyboardInterrupt:
            error = HostFailed(host_label(c), "interrupted", 130)
        else:
            if kwargs.get("json_") and not executor_reports(c) and isinstance(result, HostResult):
                print(json.dumps(document([result]), sort_keys=True), flush=True)
            return result
        if kwargs.get("json_") and not executor_reports(c):
            print(json.dumps(document([failed(error.host, func.__name__, error.reason, error.code)]),
                             sort_keys=True), flush=True)
        raise error from None

    return wrapper


def flag(value: Optional[Any]) -> Optional[Any]:
    """invoke passes flags with a None default as strings; empty means not given."""
    return None if value in (None, "") else value

