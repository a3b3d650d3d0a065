"""No-op re-provision vs one plain `ssh target true` over the same laptop -> jump -> target path.

Also counts what labhop does over SSH (connections and sessions, from the sshds' logs)
and splits its time: interpreter start, imports (fabric, the fabfile), the SSH part.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

try:
    from bench.hosts import FAB, REPO, BenchHosts, Figure, side_by_side, timed, main
except ImportError:  # run as a script: python bench/noop_provision.py
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from bench.hosts import FAB, REPO, BenchHosts, Figure, side_by_side, timed, main

GOAL = 2.0


def run(hosts: BenchHosts, runs: int) -> tuple[list[Figure], list[str]]:
    noop, ssh_true = hosts.noop_provision, hosts.ssh_true

    def fab_start() -> None:  # the floor under any fab task: the interpreter and Fabric's imports
        _quiet([FAB, "--version"], hosts.env())

    subject, baseline = side_by_side(runs, noop, ssh_true)
    figure = Figure("no-op re-provision vs `ssh target true`", "fab -H target provision (no-op)",
                    "ssh target true", subject, baseline, goal=GOAL)
    start, start_baseline = side_by_side(runs, fab_start, ssh_true)
    floor = Figure("starting fab alone (Python + Fabric imports; no labhop, no SSH) vs `ssh target true`",
                   "fab --version", "ssh target true", start, start_baseline)

    notes = [f"SSH work of one no-op provision (sshd logs): {round_trips(hosts, noop)}; "
             f"of `ssh target true`: {round_trips(hosts, ssh_true)}"]
    notes.append(breakdown(hosts, runs, figure.baseline_median))
    return [figure, floor], notes


def breakdown(hosts: BenchHosts, runs: int, ssh_true: float) -> str:
    """Where a no-op provision's time goes: bench/phases.py runs it in one process and times each phase;
    interpreter start alone measured alongside (runs interleaved)."""
    env = hosts.env()
    argv = [sys.executable, str(REPO / "bench" / "phases.py"), "-r", str(REPO), "-S", str(hosts.ssh_config),
            "-H", "target", "provision"]
    interp: list[float] = []
    phases: list[dict[str, float]] = []
    for _ in range(runs):
        interp.append(timed(lambda: _quiet([sys.executable, "-c", "pass"], env)))
        started = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=True)
        wall = time.perf_counter() - started
        marks = json.loads(proc.stderr.strip().splitlines()[-1])
        marks["exit"] = wall - marks["total"]  # interpreter start and shutdown, outside the script's clock
        phases.append(marks)
    med = {key: statistics.median(p.get(key, 0.0) for p in phases) for key in phases[0]}
    other = med["total"] - sum(med.get(k, 0.0) for k in ("import fabric", "import labhop", "connect", "lock", "apply"))
    parts = [("interpreter start and exit", med["exit"]), ("importing fabric/invoke/paramiko", med["import fabric"]),
             ("importing labhop (fabfile, tasks/)", med["import labhop"]),
             ("connecting (jump, then target)", med.get("connect", 0.0)),
             ("taking the target's lock and probing (one command)", med.get("lock", 0.0)),
             ("everything else (parsing, planning, output)", other)]
    total = med["total"] + med["exit"]
    return (f"where a no-op provision's {total:.2f}s go (medians of {runs}, one process timing its own phases): "
            + ", ".join(f"{name} {seconds:.2f}s" for name, seconds in parts)
            + f"; for comparison `python -c pass` takes {statistics.median(interp):.2f}s and `ssh target true` "
              f"{ssh_true:.2f}s")


def round_trips(hosts: BenchHosts, action) -> str:
    before = {s.name: hosts.sessions(s) for s in (hosts.topo.jump, hosts.topo.target)}
    action()
    after = {s.name: hosts.sessions(s) for s in (hosts.topo.jump, hosts.topo.target)}
    parts = []
    for name in ("jump", "target"):
        conns = after[name][0] - before[name][0]
        sessions = after[name][1] - before[name][1]
        parts.append(f"{name}: {conns} connection(s), {sessions} command session(s)")
    return "; ".join(parts)


def _quiet(argv: list[str], env: dict[str, str]) -> None:
    subprocess.run(argv, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)


if __name__ == "__main__":
    main(run)
