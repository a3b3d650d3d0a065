"""The `labhop` command, built Fabric's way: a ``fabric.main.Fab`` program with a fixed namespace.

`labhop` (pyproject ``[project.scripts]``) runs the tasks of tasks/commands.py from any directory,
with Fabric's core flags (``-H``, ``-S``, ``-i``, ``-t`` ...) and the fleet executor that fabric.yaml
selects for ``fab`` in the clone. The clone's fabfile.py re-exports the same tasks (``namespace()``),
so ``fab`` there and ``labhop`` anywhere are the same program.

Both programs turn a parse error (an unknown task or flag, a flag value of the wrong kind) into one
line and exit 2, the README's "usage" code; invoke's own edge exits 1 for those.
"""
from __future__ import annotations

import contextlib
import gc
import os
import sys
import types
from typing import Any, Iterator, Optional

from fabric import Config
from fabric.main import Fab
from invoke.collection import Collection
from invoke.exceptions import Exit, ParseError

from .errors import EXIT_USAGE

VERSION = "0.1.0"


def tune_startup(*, freeze: bool = True) -> None:
    """Start-up tuning, called explicitly by each program (never at import).

    - invoke turns .pyc writing off for the whole run (its ``--write-pyc`` flag), which recompiled
      labhop's modules on every run (~0.1 s of each command): labhop caches its bytecode as any
      installed package does; ``PYTHONDONTWRITEBYTECODE`` / ``-B`` still turn that off.
    - ``freeze``: what the program imported lives until it exits; freezing it keeps the garbage
      collector's full collections from walking all of it again and again (~0.1 s of a no-op run).
    """
    sys.dont_write_bytecode = bool(sys.flags.dont_write_bytecode)
    if freeze:
        gc.freeze()


def namespace() -> Collection:
    """labhop's tasks (tasks/commands.py) as a collection, imported with bytecode caching on."""
    tune_startup(freeze=False)
    from . import commands

    return Collection.from_module(commands)


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """invoke's parse errors (unknown task or flag, a value of the wrong kind) -> one line, exit 2."""
    try:
        yield
    except ParseError as exc:
        raise Exit(f"labhop: {exc}", code=EXIT_USAGE) from None
    except ValueError as exc:  # invoke converting a flag's value to its kind (int, bool)
        raise Exit(f"labhop: bad flag value: {exc}", code=EXIT_USAGE) from None


class LabhopConfig(Config):  # type: ignore[misc]  # Fabric ships no types
    """Fabric's config with labhop's defaults: what fabric.yaml gives ``fab`` in the clone."""

    prefix = "fabric"  # the same config files and FABRIC_* variables as fab

    @staticmethod
    def global_defaults() -> dict[str, Any]:
        from invoke.config import merge_dicts

        from .fleet import DEFAULT_CONNECT_TIMEOUT, DEFAULT_PARALLEL

        return merge_dicts(Config.global_defaults(), {
            "tasks": {"executor_class": "labhop.fleet.FleetExecutor"},
            "labhop": {"parallel": DEFAULT_PARALLEL, "connect_timeout": DEFAULT_CONNECT_TIMEOUT},
        })


class Labhop(Fab):  # type: ignore[misc]
    """``fab`` with labhop's tasks built in, usable from any directory."""

    def parse_core(self, *args: Any, **kwargs: Any) -> None:
        with usage_errors():
            super().parse_core(*args, **kwargs)
        tune_startup(freeze=False)  # parse_core set invoke's bytecode flag

    def parse_collection(self) -> None:
        super().parse_collection()
        tune_startup()  # everything a run needs before its first task is imported by now

    def parse_tasks(self) -> None:
        with usage_errors():
            super().parse_tasks()

    def parse_cleanup(self) -> None:
        with usage_errors():
            super().parse_cleanup()


def make_program() -> Labhop:
    from .fleet import FleetExecutor

    return Labhop(name="labhop", version=VERSION, namespace=namespace(), executor_class=FleetExecutor,
                  config_class=LabhopConfig, binary="labhop")


def main(argv: Optional[list[str]] = None) -> None:
    """The console script: ``labhop [--core-opts] task [--task-opts] ...``."""
    try:
        make_program().run(argv)
    except BrokenPipeError:  # `labhop --help | head`: the reader left; no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def guard_fab_program() -> None:
    """For `fab` in the clone (fabfile.py): the same exit 2 for parse errors as ``labhop``.

    fabfile.py is imported while fab parses its command line (after the core flags, before the
    tasks' flags): this wraps the running program's remaining parse steps.
    """
    from fabric import main as fabric_main

    program = fabric_main.program
    for name in ("parse_tasks", "parse_cleanup"):
        original = getattr(program, name)
        if getattr(original, "_labhop_guarded", False):
            continue

        def guarded(self: Any, _original: Any = original) -> None:
            with usage_errors():
                _original()

        guarded._labhop_guarded = True  # type: ignore[attr-defined]
        setattr(program, name, types.MethodType(guarded, program))
