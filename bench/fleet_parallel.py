"""Three hosts at once vs one: `fab -H target,target2,target3 provision` vs `fab -H target provision`.

Both no-op re-provisions over the jump host, so the figure is what a fleet run adds
on top of one host's round trips (tasks/fleet.py runs the hosts concurrently).
"""
from __future__ import annotations

import sys

try:
    from bench.hosts import BenchHosts, Figure, side_by_side, main
except ImportError:  # run as a script
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from bench.hosts import BenchHosts, Figure, side_by_side, main

GOAL = 1.5
HOSTS = 3


def run(hosts: BenchHosts, runs: int) -> tuple[list[Figure], list[str]]:
    names = hosts.names[:HOSTS]
    if len(names) < HOSTS:
        raise RuntimeError(f"needs {HOSTS} targets, got {names}")

    def fleet() -> None:
        out = hosts.fab("provision", hosts=names).stdout
        if f"on {HOSTS} host(s): all ok" not in out:
            raise RuntimeError(f"fleet run did not succeed:\n{out}")

    def single() -> None:
        hosts.fab("provision", hosts=names[:1])

    subject, baseline = side_by_side(runs, fleet, single)
    figure = Figure(f"{HOSTS} hosts in parallel vs 1 host", f"fab -H {','.join(names)} provision (no-op)",
                    f"fab -H {names[0]} provision (no-op)", subject, baseline, goal=GOAL)
    notes = [f"fleet runs use the FleetExecutor from fabric.yaml (labhop.parallel = 8); the {HOSTS} targets "
             f"sit behind the same jump host, each reached over its own jump connection"]
    return [figure], notes


if __name__ == "__main__":
    main(run, n_targets=HOSTS)
