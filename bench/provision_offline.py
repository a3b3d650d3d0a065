"""Air-gapped provision: cold and no-op times through one jump host, wheelhouse cached on the controller.

    python bench/provision_offline.py [cold runs, default 3]

The target is the test harness's (tests/harness/topology.py): its own network namespace
with no route out, reached through the jump host; its Python is Debian's /usr/bin/python3.
The wheelhouse is built (or found) before timing, in $LABHOP_CACHE_DIR or
/tmp/labhop-bench-cache (kept between runs). Each cold run uses a fresh prefix and an
empty uv cache on the target. Baselines measured in the same run: a plain
`ssh target true` over the same path, and on the target itself, installing the same
requirements from the same pushed wheelhouse with pip (python -m venv + pip) vs uv.
Goals: cold <= 20 s, no-op <= 2 s.
"""
from __future__ import annotations

import functools
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

try:
    from bench.hosts import FAB, REPO, TARGET_PYTHON, BenchHosts, bench_hosts, timed
except ImportError:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.hosts import FAB, REPO, TARGET_PYTHON, BenchHosts, bench_hosts, timed

from labhop.packages import PACKAGES  # noqa: E402

COLD_GOAL, NOOP_GOAL = 20.0, 2.0
CACHE = Path(os.environ.get("LABHOP_CACHE_DIR") or "/tmp/labhop-bench-cache")
STEP = re.compile(r"changed  (.+?) \((\d+\.\d)s\)$")


def fab(hosts: BenchHosts, host: str, *args: str) -> str:
    env = hosts.env(LABHOP_CACHE_DIR=str(CACHE), PIP_CACHE_DIR=str(CACHE / "pip"))
    proc = subprocess.run([FAB, "-r", str(REPO), "-S", str(hosts.ssh_config), "-H", host, *args],
                          cwd=hosts.workdir, env=env, capture_output=True, text=True, timeout=1800,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"fab -H {host} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def on_target(hosts: BenchHosts, script: str) -> str:
    done = hosts.ssh("target", f"sh -c {shlex.quote(script)}", timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"on the target: {script}\n{done.stderr}")
    return done.stdout


def seconds_on_target(hosts: BenchHosts, script: str) -> float:
    """Time ``script`` on the target itself (no SSH in the figure)."""
    out = on_target(hosts, f"s=$(date +%s%N); {script} >/dev/null; e=$(date +%s%N); echo $((e - s))")
    return int(out.split()[-1]) / 1e9


def main(cold_runs: int) -> int:
    started = time.monotonic()
    with bench_hosts(1, provision=False, say=lambda text: print(f"  {text}", flush=True)) as hosts:
        home = hosts.topo.target.home
        names = [f"cold{i}" for i in range(cold_runs + 1)]  # cold0: the untimed warm-up
        hosts.inventory.write_text(f'[defaults]\npython = "{TARGET_PYTHON}"\n' + "".join(
            f'\n[hosts.{n}]\nhostname = "target"\nprefix = "{home}/.labhop-{n}"\nbin_dir = "{home}/.local/bin-{n}"\n'
            for n in names))
        version = on_target(hosts, f"{TARGET_PYTHON} -c 'import platform; print(platform.python_version())'").strip()
        print(f"controller Python {sys.version.split()[0]}, target {TARGET_PYTHON} {version}; "
              f"isolated target: {hosts.topo.isolated}", flush=True)

        t0 = time.monotonic()
        warm = fab(hosts, "cold0", "provision")  # builds the wheelhouse if it is not cached yet
        built = "building a wheelhouse" in warm
        house = re.search(r"wheelhouse for (.+?): (\d+) wheels, ([\d.]+ MB)", warm)
        print(f"warm-up provision {time.monotonic() - t0:.1f}s "
              f"({'wheelhouse built now' if built else 'wheelhouse already cached'}"
              f"{': ' + house.group(0) if house else ''})", flush=True)

        cold, noop, ssh_true, breakdown = [], [], [], []
        for name in names[1:]:
            on_target(hosts, "rm -rf ~/.cache/uv")  # a target that never ran uv
            provision = functools.partial(fab, hosts, name, "provision")
            started = time.perf_counter()
            out = provision()
            cold.append(time.perf_counter() - started)
            breakdown.append({m.group(1): float(m.group(2)) for m in map(STEP.search, out.splitlines()) if m})
            for _ in range(2):
                noop.append(timed(provision))
                ssh_true.append(timed(lambda: hosts.ssh("target", "true")))
        # pip vs uv from the same pushed wheelhouse, on the target, each in a fresh venv.
        wheelhouse, uv = f"{home}/.labhop-cold0/wheelhouse", f"{home}/.labhop-cold0/bin/uv"
        reqs = " ".join(f"'{r}'" for r in PACKAGES.values())
        uv_times, pip_times = [], []
        for _ in range(2):
            uv_times.append(seconds_on_target(hosts, (
                f"rm -rf ~/.cache/uv /tmp/bench-uv && {uv} venv -q --python {TARGET_PYTHON} /tmp/bench-uv && "
                f"{uv} pip install -q --offline --no-index --find-links {wheelhouse} "
                f"--python /tmp/bench-uv/bin/python {reqs}")))
            pip_times.append(seconds_on_target(hosts, (
                f"rm -rf /tmp/bench-pip && {TARGET_PYTHON} -m venv /tmp/bench-pip && /tmp/bench-pip/bin/python -m pip "
                f"install -q --no-index --find-links {wheelhouse} --disable-pip-version-check {reqs}")))
        on_target(hosts, "rm -rf /tmp/bench-uv /tmp/bench-pip")

    report(cold, noop, ssh_true, breakdown, uv_times, pip_times)
    print(f"(benchmark took {time.monotonic() - started:.0f}s; load average now "
          f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs)")
    return 0


LABELS = (("push ", "push"), ("unpack uv", "unpack uv"), ("unpack ", "split + sha256"),
          ("create virtual environment", "venv"), ("install ", "install"), ("link ", "link rmate"),
          ("add ", "login PATH"), ("create ", "prefix"))


def label(description: str) -> str:
    return next((name for start, name in LABELS if description.startswith(start)), description)


def report(cold, noop, ssh_true, breakdown, uv_times, pip_times) -> None:
    med = statistics.median
    base = med(ssh_true)
    print(f"cold provision (fresh prefix, empty uv cache): median {med(cold):.1f}s "
          f"[{', '.join(f'{t:.1f}' for t in cold)}], goal <= {COLD_GOAL:g}s: "
          f"{'met' if med(cold) <= COLD_GOAL else 'NOT met'}; {med(cold) / base:.0f}x `ssh target true` ({base:.2f}s)")
    steps: dict[str, list[float]] = {}
    for run in breakdown:
        for description, seconds in run.items():
            key = label(description)
            steps.setdefault(key, []).append(seconds)
    parts = ", ".join(f"{k} {med(v):.1f}s" for k, v in steps.items())
    print(f"  its steps (medians): {parts}")
    print(f"no-op re-run: median {med(noop):.2f}s [{', '.join(f'{t:.2f}' for t in noop)}], goal <= {NOOP_GOAL:g}s: "
          f"{'met' if med(noop) <= NOOP_GOAL else 'NOT met'}; {med(noop) / base:.1f}x `ssh target true` "
          f"({base:.2f}s, runs alternating)")
    print(f"install from the same wheelhouse on the target (fresh venv each): uv {med(uv_times):.1f}s "
          f"[{', '.join(f'{t:.1f}' for t in uv_times)}] vs pip {med(pip_times):.1f}s "
          f"[{', '.join(f'{t:.1f}' for t in pip_times)}]: uv takes {med(uv_times) / med(pip_times):.2f}x pip's time")


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
