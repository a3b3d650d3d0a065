"""The command the user runs labhop by, for the commands that messages suggest.

``fab`` in a project with fabfile.py, or the ``labhop`` program anywhere (tasks/program.py): a hint
should name the one the user typed, as argparse's ``prog`` does.
"""
from __future__ import annotations

import os
import sys


def program_name(argv0: str) -> str:
    return "labhop" if os.path.basename(argv0).startswith("labhop") else "fab"


PROGRAM = program_name(sys.argv[0] if sys.argv else "")
