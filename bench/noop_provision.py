"""No-op re-provision vs one plain `ssh target true` over the same laptop -> jump -> target path.

Also counts what labhop does over SSH (connections and sessions, from the sshds' logs)
and splits its time: interpreter start, imports (fabric, the fabfile), the SSH part.
"""
from __future__ import annotations

import statistics
import subprocess
import sys

try:
    from bench.hosts import FAB, REPO, BenchHosts, Figure, bench_hosts, side_by_side, timed
except ImportError:  # run as a script: python bench/noop_provision.py
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from bench.hosts import FAB, REPO, BenchHosts, Figure, bench_hosts, side_by_side, timed

GOAL = 2.0


def run(hosts: BenchHosts, runs: int) -> tuple[list[Figure], list[str]]:
    def noop() -> None:
        out = hosts.fab("provision", hosts=["target"]).stdout
        if "provision: nothing to do" not in out:
            raise RuntimeError(f"not a no-op:\n{out}")

    def ssh_true() -> None:
        if hosts.ssh("target", "true").returncode != 0:
            raise RuntimeError("ssh target true failed")

    subject, baseline = side_by_side(runs, noop, ssh_true)
    figure = Figure("no-op re-provision vs `ssh target true`", "fab -H target provision (no-op)",
                    "ssh target true", subject, baseline, goal=GOAL)

    notes = [f"SSH work of one no-op provision (sshd logs): {round_trips(hosts, noop)}; "
             f"of `ssh target true`: {round_trips(hosts, ssh_true)}"]
    env = hosts.env()
    interp = [timed(lambda: _quiet([sys.executable, "-c", "pass"], env)) for _ in range(runs)]
    fabric = [timed(lambda: _quiet([sys.executable, "-c", "import fabric.main"], env)) for _ in range(runs)]
    listing = [timed(lambda: _quiet([FAB, "-r", str(REPO), "--list"], env)) for _ in range(runs)]
    start, imp_fabric, imp_all = (statistics.median(x) for x in (interp, fabric, listing))
    total = figure.subject_median
    notes.append(
        f"where a no-op provision's {total:.2f}s go (medians): interpreter start {start:.2f}s, "
        f"+ importing fabric/invoke/paramiko {imp_fabric - start:.2f}s, + loading the fabfile and "
        f"labhop's modules {imp_all - imp_fabric:.2f}s (`fab --list`: {imp_all:.2f}s), "
        f"+ connecting, locking, probing {total - imp_all:.2f}s; `ssh target true` takes "
        f"{figure.baseline_median:.2f}s in all")
    return [figure], notes


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
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    with bench_hosts(1) as h:
        figures, notes = run(h, runs)
        for f in figures:
            print(f.line())
        for n in notes:
            print(n)
