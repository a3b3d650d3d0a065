"""What the target lock costs: a no-op `fab -H target provision` (takes the lock) vs the same
with `--dry-run` (the same connection, probe and plan, no lock).

The lock costs no SSH session of its own: the flock holder (tasks/target/lock.py) is the command that
probes, and it stays until the run ends; a dry run probes in a plain command instead.
"""
from __future__ import annotations

import sys

try:
    from bench.hosts import BenchHosts, Figure, side_by_side, main
except ImportError:  # run as a script
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from bench.hosts import BenchHosts, Figure, side_by_side, main


def run(hosts: BenchHosts, runs: int) -> tuple[list[Figure], list[str]]:
    name = hosts.names[0]

    def locked() -> None:
        hosts.noop_provision(name)

    def unlocked() -> None:
        out = hosts.fab("provision", "--dry-run", hosts=[name]).stdout
        if "nothing was changed" not in out:
            raise RuntimeError(f"not a dry run:\n{out}")

    subject, baseline = side_by_side(runs, locked, unlocked)
    figure = Figure("target lock", f"fab -H {name} provision (no-op, locked)",
                    f"fab -H {name} provision --dry-run (no lock)", subject, baseline)
    return [figure], ["the lock needs no SSH session of its own: the flock holder is the command that probes "
                      "(one session on the run's connection), held until the task ends"]


if __name__ == "__main__":
    main(run)
