"""The task edge: turn a Fabric/invoke context into a labhop session, and errors into one line.

Domain errors become ``invoke.Exit`` (message on stderr, exit code, no traceback).
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

from invoke.exceptions import Exit

from .connect import Target, resolve_target
from .errors import LabhopError
from .executor import ApplyResult, apply
from .inventory import inventory_path, load_inventory
from .plan import Plan
from .report import Reporter
from .settings import HostSettings, resolve_settings


@dataclass
class Session:
    target: Target
    settings: HostSettings
    report: Reporter

    @property
    def c(self) -> Any:
        return self.target.c

    def apply(self, plan: Plan, task: str, *, dry_run: bool = False) -> ApplyResult:
        for warning in plan.warnings:
            self.report.warn(warning)
        self.report.dry_run = dry_run
        outcome = apply(self.c, plan.steps, dry_run=dry_run, on_step=self.report.step)
        self.report.summary(task, outcome)
        return outcome


def open_session(c: Any, **flags: Any) -> Session:
    """Resolve the host (inventory first, then ssh_config) and its settings (flags over inventory)."""
    inventory = load_inventory(inventory_path())
    target = resolve_target(c, inventory)
    settings = resolve_settings(target.entry, **flags)
    return Session(target=target, settings=settings, report=Reporter(target.name))


def host_label(c: Any) -> str:
    return getattr(c, "original_host", None) or "local"


def edge(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a task: LabhopError -> one line on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(c: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(c, *args, **kwargs)
        except LabhopError as exc:
            raise Exit(f"labhop: {host_label(c)}: {exc}", code=exc.exit_code) from None
        except KeyboardInterrupt:
            raise Exit(f"labhop: {host_label(c)}: interrupted", code=130) from None

    return wrapper


def flag(value: Optional[Any]) -> Optional[Any]:
    """invoke passes flags with a None default as strings; empty means not given."""
    return None if value in (None, "") else value


def eprint(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
