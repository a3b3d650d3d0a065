"""labhop's tasks for `fab` in the clone; the `labhop` command runs the same ones from anywhere.

    fab provision serve              # this machine
    fab -H internal provision serve  # a host from inventory.toml or ssh_config

The tasks live in the package (tasks/commands.py, installed as labhop.commands).
"""
from labhop.program import guard_fab_program, namespace, tune_startup

ns = namespace()
guard_fab_program()
tune_startup()
