"""Hints name the command the user typed: `labhop` (the console script) or `fab`."""
from __future__ import annotations

import pytest

from labhop.invocation import program_name


@pytest.mark.parametrize(("argv0", "name"), [
    ("/home/u/.venv/bin/labhop", "labhop"),
    ("labhop", "labhop"),
    ("/usr/local/bin/fab", "fab"),
    ("/usr/lib/python3/site-packages/pytest/__main__.py", "fab"),
    ("", "fab"),
])
def test_program_name(argv0: str, name: str) -> None:
    assert program_name(argv0) == name
