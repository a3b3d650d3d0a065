"""`serve --slurm` on the test harness's real Slurm (tests/harness/slurm.py) behind the jump host.

1. From submit to the first HTTP answer through the login node: `fab -H target serve --slurm` (no job
   running, provisioned login node) vs the hand-made recipe on the same cluster: sbatch a script running
   `jupyter lab` on the node's address, poll squeue (every 0.5 s) until it runs, read node and token from
   the job log, ask the server from the login node. Both through the jump host, each step its own ssh as a
   person's script would; labhop's clock stops when `fab` returns (it has seen the answer).
2. A no-op `serve --slurm` (the job serves with these settings) vs `ssh target true`, with the commands it
   started on the login node (sshd's "Starting session" lines) per run.

``LABHOP_BENCH_NOOP_ONLY=1``: only figure 2. ``LABHOP_BENCH_BEFORE_FAB=PATH`` (and
``LABHOP_BENCH_BEFORE_REPO=CHECKOUT``, its fabfile's): also time another labhop's `fab` (e.g. a venv on an
older commit) in the same rounds, each round running before, after and `ssh true`
in turn (rotated), so that the shared machine's load falls on all three alike.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time

try:
    from bench.hosts import FAB, REPO, BenchHosts, Figure, main, timed
except ImportError:  # run as a script
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from bench.hosts import FAB, REPO, BenchHosts, Figure, main, timed

from tests.harness.slurm import start_slurm

SUBMIT_GOAL = 1.3
NOOP_GOAL = 2.0
HAND_PORT = 18890

ASK = r'''
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2); print("up")
except urllib.error.HTTPError:
    print("up")
except Exception:
    print("down")
'''


def run(hosts: BenchHosts, runs: int) -> tuple[list[Figure], list[str]]:
    target = hosts.targets[0]
    cluster = start_slurm(hosts.topo, hosts.workdir / "slurm")
    try:
        return _measure(hosts, target, cluster, runs)
    finally:
        hosts.fab("stop", hosts=[target.name], check=False)
        cluster.login_run("scancel", "--user=root")
        cluster.close()


def _measure(hosts: BenchHosts, target, cluster, runs: int) -> tuple[list[Figure], list[str]]:
    venv = f"{target.home}/.labhop/venv/bin"

    def labhop() -> float:
        started = time.perf_counter()
        out = hosts.fab("serve", "--slurm", "--time", "30", hosts=[target.name]).stdout
        seconds = time.perf_counter() - started
        if "open: http://127.0.0.1:" not in out:
            raise RuntimeError(f"serve --slurm printed no URL:\n{out}")
        hosts.fab("stop", hosts=[target.name])
        return seconds

    def by_hand() -> float:
        script = (f"#!/bin/sh\n#SBATCH --time=30\n#SBATCH --output={target.home}/hand-%j.log\n"
                  f"exec {venv}/jupyter lab --no-browser --allow-root --ip=$(hostname -i) --port={HAND_PORT}\n")
        started = time.perf_counter()
        sub = hosts.ssh(target.name, f"printf %s {shlex.quote(script)} | sbatch --parsable")
        job = sub.stdout.strip().split(";")[0]
        if not job.isdigit():
            raise RuntimeError(f"sbatch by hand: {sub.stdout} {sub.stderr}")
        url = None
        while url is None:
            state = hosts.ssh(target.name, f"squeue -h -j {job} -o '%T %N'").stdout.split()
            if state and state[0] == "RUNNING":
                log = hosts.ssh(target.name, f"cat {target.home}/hand-{job}.log").stdout
                found = [u for u in re.findall(r"(http://[^/\s]+:\d+/lab\?token=\w+)", log)
                         if not u.startswith("http://127.")]
                if found:
                    url = found[0]
                    break
            elif state and state[0] not in ("PENDING", "CONFIGURING"):
                raise RuntimeError(f"job by hand {job}: {state}")
            time.sleep(0.5)
        api = re.sub(r"/lab\?token=", "/api/status?token=", url)
        while hosts.ssh(target.name, f"python3 -c {shlex.quote(ASK)} {shlex.quote(api)}").stdout.strip() != "up":
            time.sleep(0.5)
        seconds = time.perf_counter() - started
        hosts.ssh(target.name, f"scancel {job}; while squeue -h -j {job} -t R,CG | grep -q .; do sleep 0.2; done")
        return seconds

    figures: list[Figure] = []
    if not os.environ.get("LABHOP_BENCH_NOOP_ONLY"):
        labhop()  # warm-up (also writes the config): first starts fill caches
        by_hand()
        subject, baseline = [], []
        for i in range(runs):
            pair = [(labhop, subject), (by_hand, baseline)]
            for func, into in (pair if i % 2 == 0 else pair[::-1]):
                into.append(func())
        figures.append(Figure("`serve --slurm` from submit to the first answer vs the hand-made sbatch recipe",
                              "fab -H target serve --slurm", "sbatch + squeue polling + token from the log + curl",
                              subject, baseline, goal=SUBMIT_GOAL))

    hosts.fab("serve", "--slurm", "--time", "30", hosts=[target.name])
    sessions: dict[str, list[int]] = {}

    def noop(fab: str, root: str, label: str) -> None:
        before = hosts.sessions(target)[1]
        argv = [fab, "-r", root, "-S", str(hosts.ssh_config),
                "-H", target.name, "serve", "--slurm", "--time", "30"]
        out = subprocess.run(argv, cwd=hosts.workdir, env=hosts.env(), capture_output=True, text=True,
                             timeout=300, stdin=subprocess.DEVNULL).stdout
        if "nothing to do" not in out:
            raise RuntimeError(f"not a no-op serve --slurm ({label}):\n{out}")
        sessions.setdefault(label, []).append(hosts.sessions(target)[1] - before)

    sides: list[tuple[str, str, str]] = [("after", FAB, str(REPO))]
    other = os.environ.get("LABHOP_BENCH_BEFORE_FAB")
    if other:  # LABHOP_BENCH_BEFORE_REPO: that fab's own checkout (its fabfile)
        sides.insert(0, ("before", other, os.environ.get("LABHOP_BENCH_BEFORE_REPO") or str(REPO)))
    funcs = [*((label, (lambda f=fab, r=root, la=label: noop(f, r, la))) for label, fab, root in sides),
             ("ssh", lambda: hosts.ssh_true(target.name))]
    for _, func in funcs:  # warm-up
        func()
    sessions.clear()
    times: dict[str, list[float]] = {label: [] for label, _ in funcs}
    for i in range(runs):
        for label, func in funcs[i % len(funcs):] + funcs[:i % len(funcs)]:
            times[label].append(timed(func))
    notes = []
    for label, fab, _ in sides:
        figures.append(Figure(f"no-op `serve --slurm` (the job serves) vs `ssh target true` [{label}: {fab}]",
                              "fab -H target serve --slurm", "ssh target true", times[label], times["ssh"],
                              goal=NOOP_GOAL))
        notes.append(f"{label}: commands started on the login node per no-op run: {sessions[label]}; "
                     f"times (s, sorted): {' '.join(f'{t:.3f}' for t in sorted(times[label]))}")
    notes.append(f"ssh target true: times (s, sorted): {' '.join(f'{t:.3f}' for t in sorted(times['ssh']))}")
    notes.append(f"load average at the end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
                 f"{os.getloadavg()[2]:.2f}")
    return figures, notes


if __name__ == "__main__":
    main(run, default_runs=3)
