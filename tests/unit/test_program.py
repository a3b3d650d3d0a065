"""The `labhop` program (tasks/program.py) and its tasks' flags (tasks/commands.py), in process."""
from __future__ import annotations

import sys

import pytest

from labhop import commands
from labhop.program import make_program, tune_startup


def flags_of(name: str) -> dict[str, list[str]]:
    """long flag -> its names, for one task."""
    task = getattr(commands, name)
    return {arg.names[0]: list(arg.names) for arg in task.get_arguments()}


TASKS = ["provision", "serve", "status", "stop", "logs", "url", "tunnel", "rmate"]


def test_one_short_flag_means_one_thing_in_every_task() -> None:
    meaning: dict[str, str] = {}
    for name in TASKS:
        for long, names in flags_of(name).items():
            for short in names[1:]:
                assert meaning.setdefault(short, long) == long, f"-{short} is --{meaning[short]} and --{long}"
    # ssh's and tail's habits; --public (a security choice) has no short form.
    assert meaning == {"p": "port", "b": "bind", "f": "background", "n": "lines", "j": "json"}
    assert flags_of("serve")["public"] == ["public"]
    assert flags_of("provision")["offline"] == ["offline"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        make_program().run(["labhop", *argv])
    return int(exited.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["provision", "--bogus"], "labhop: No idea what '--bogus' is!"),
    (["bogus"], "labhop: No idea what 'bogus' is!"),
    (["--help", "bogus"], "labhop: No idea what 'bogus' is!"),
])
def test_unknown_flags_and_tasks_are_usage_errors(argv: list[str], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(argv, capsys)
    assert (code, err.strip()) == (2, message)


def test_bad_flag_values_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["logs", "--lines", "abc"], capsys)
    assert (code, err.strip()) == (2, "labhop: local: --lines: 'abc' is not a number of lines")
    code, err = run(["logs", "-n", "0"], capsys)
    assert (code, err.strip()) == (2, "labhop: local: --lines: 0 is not a number of lines (1 or more)")


def test_the_program_has_fabrics_core_flags_and_the_fleet_executor() -> None:
    program = make_program()
    names = {name for arg in program.initial_context.args.values() for name in arg.names}
    assert {"H", "hosts", "S", "ssh-config", "i", "identity", "t", "connect-timeout"} <= names
    assert "search-root" not in names  # the tasks are built in: nothing to search for
    assert program.config_class().tasks.executor_class == "labhop.fleet.FleetExecutor"
    assert program.config_class().labhop.parallel == 8


def test_startup_tuning_is_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = []
    monkeypatch.setattr("gc.freeze", lambda: frozen.append(True))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # as invoke leaves it
    tune_startup(freeze=False)
    assert sys.dont_write_bytecode is bool(sys.flags.dont_write_bytecode) and frozen == []
    tune_startup()
    assert frozen == [True]
