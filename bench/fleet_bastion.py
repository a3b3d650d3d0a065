"""A 32-host fleet behind one bastion vs one host: `fab -H target,...,target32 provision --dry-run` vs one host.

With OpenSSH masters (tasks/ssh/master.py) every target's connection rides the bastion's one
master, and a run after the first logs in nowhere: the figure is what 32 hosts' probes add to
one host's, not 32 handshakes. Runs alternate (both sides warm: the masters are up).

    python bench/fleet_bastion.py [RUNS] [HOSTS] [paramiko]   # paramiko: the fallback, a login per host and run
"""
from __future__ import annotations

import os
import resource
import statistics
import sys
from typing import Callable

try:
    from bench.hosts import BenchHosts, Figure, bench_hosts, side_by_side
except ImportError:  # run as a script
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from bench.hosts import BenchHosts, Figure, bench_hosts, side_by_side

GOAL = 2.0


def run(hosts: BenchHosts, runs: int) -> tuple[list[Figure], list[str]]:
    names = hosts.names
    # The controller's own CPU (fab and the ssh clients it waits for), apart from the wall time:
    # here the 32 targets' sshds and probes share the controller's 2 CPUs, on a real site they do not.
    cpu: dict[str, list[float]] = {"fleet": [], "single": []}

    machine: dict[str, list[float]] = {"fleet": [], "single": []}

    def controller_cpu(side: str, run_fab: Callable[[], object]) -> None:
        before, busy = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy()
        run_fab()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu[side].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        machine[side].append(machine_busy() - busy)

    def fleet() -> None:
        def run_fab() -> None:
            out = hosts.fab("provision", "--dry-run", hosts=names, timeout=900).stdout
            if f"on {len(names)} host(s): all ok" not in out:
                raise RuntimeError(f"fleet dry run did not succeed:\n{out}")
        controller_cpu("fleet", run_fab)

    def single() -> None:
        controller_cpu("single", lambda: hosts.fab("provision", "--dry-run", hosts=names[:1]))

    subject, baseline = side_by_side(runs, fleet, single)
    figure = Figure(f"{len(names)} hosts behind one bastion vs 1 host (dry run, logins live)",
                    f"fab -H target..target{len(names)} provision --dry-run", "fab -H target provision --dry-run",
                    subject, baseline, goal=GOAL)
    logins = {server.name: server.log_path.read_text(errors="replace").count("Accepted publickey")
              for server in [hosts.topo.jump]}
    notes = [f"logins accepted by the bastion over the whole benchmark: {logins['jump']}, the harness's own "
             f"readiness check included (one master; before OpenSSH masters every run made {len(names)})"]
    # [0] is the warm-up run's
    fleet_cpu, single_cpu = statistics.median(cpu["fleet"][1:]), statistics.median(cpu["single"][1:])
    notes.append(f"controller CPU (fab + its ssh clients, medians): {fleet_cpu:.2f}s for {len(names)} hosts vs "
                 f"{single_cpu:.2f}s for 1 ({fleet_cpu / single_cpu:.2f}x; "
                 f"{(fleet_cpu - single_cpu) / max(1, len(names) - 1) * 1000:.0f} ms per extra host)")
    if machine["fleet"][1:] and machine["fleet"][-1] >= 0:
        busy = statistics.median(machine["fleet"][1:])
        notes.append(f"the whole machine's CPU during a {len(names)}-host run (medians, /proc/stat): {busy:.2f}s "
                     f"busy, the targets' sshds and probes included, on {os.cpu_count()} CPU(s): the wall time "
                     f"cannot go below {busy / (os.cpu_count() or 1):.2f}s here")
    return [figure], notes


def machine_busy() -> float:
    """Seconds of CPU the whole machine spent busy so far (Linux /proc/stat); -1 elsewhere."""
    try:
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    except (OSError, ValueError):
        return -1.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    with bench_hosts(n, provision=False) as h:
        if sys.argv[3:] == ["paramiko"]:
            plain_env = h.env
            h.env = lambda **extra: plain_env(LABHOP_TRANSPORT="paramiko", **extra)  # type: ignore[method-assign]
        figures, notes = run(h, runs)
        for f in figures:
            print(f.line())
        for note in notes:
            print(note)


if __name__ == "__main__":
    main()
