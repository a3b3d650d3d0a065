"""`fab serve` until JupyterLab answers vs starting `jupyter lab` by hand on the target.

Both start the same JupyterLab (labhop's venv on a provisioned target behind the jump
host) on a stopped host. The clock starts when the command starts and stops at the
first HTTP answer seen by a poller (every 50 ms) inside the target's network namespace;
for labhop also not before `fab serve` has returned (it prints the URL then).
"""
from __future__ import annotations

import subprocess
import sys
import time

try:
    from bench.hosts import BenchHosts, Figure, main
except ImportError:  # run as a script
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from bench.hosts import BenchHosts, Figure, main

GOAL = 1.3
LABHOP_PORT = 18888
HAND_PORT = 18889

POLL = r'''
import sys, time, urllib.request, urllib.error
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        urllib.request.urlopen(url, timeout=2); sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)  # answered
    except Exception:
        time.sleep(0.05)
sys.exit(1)
'''


def run(hosts: BenchHosts, runs: int) -> tuple[list[Figure], list[str]]:
    target = hosts.targets[0]
    jupyter = f"{target.home}/.labhop/venv/bin/jupyter"

    def poller(port: int) -> subprocess.Popen:
        url = f"http://127.0.0.1:{port}/api/status"
        return subprocess.Popen(hosts.in_target_ns(sys.executable, "-c", POLL, url, "120"))

    def labhop() -> float:
        started = time.perf_counter()
        poll = poller(LABHOP_PORT)
        hosts.fab("serve", "--port", str(LABHOP_PORT), hosts=[target.name])
        if poll.wait(timeout=120) != 0:
            raise RuntimeError("labhop's server never answered")
        seconds = time.perf_counter() - started
        hosts.fab("stop", hosts=[target.name])
        return seconds

    def by_hand() -> float:
        started = time.perf_counter()
        poll = poller(HAND_PORT)
        start = hosts.ssh(target.name, f"cd ~ || exit 1; nohup {jupyter} lab --no-browser --allow-root "
                                       f"--ip=127.0.0.1 --port={HAND_PORT} --ServerApp.token=bench "
                                       "> ~/by-hand.log 2>&1 < /dev/null & echo $!")
        if start.returncode != 0 or poll.wait(timeout=120) != 0:
            raise RuntimeError(f"jupyter lab by hand did not answer: {start.stderr}")
        seconds = time.perf_counter() - started
        pid = start.stdout.strip()
        hosts.ssh(target.name, f"kill {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.1; done")
        return seconds

    if runs > 1:
        labhop(), by_hand()  # warm-up: first start writes JupyterLab's own state, fills caches
    subject: list[float] = []
    baseline: list[float] = []
    for i in range(runs):
        pair = [(labhop, subject), (by_hand, baseline)]
        for func, into in (pair if i % 2 == 0 else pair[::-1]):
            into.append(func())
    figure = Figure("`serve` until the first answered HTTP request vs `jupyter lab` by hand",
                    "fab -H target serve (stopped server, provisioned host)",
                    "ssh target 'nohup jupyter lab ... &'", subject, baseline, goal=GOAL)
    return [figure], []


if __name__ == "__main__":
    main(run, default_runs=5)
