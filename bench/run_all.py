"""Run every labhop benchmark and write docs/BENCHMARKS.md.

    python bench/run_all.py            # medians of 7 runs (serve: 5); ~5 minutes
    python bench/run_all.py --quick    # one run each, nothing written (keeps the code working)

Needs root for the network namespaces of the test topology (tests/harness/topology.py),
and PyPI once, to install JupyterLab into the targets' throwaway homes.
Every figure is a ratio measured side by side in the same run (runs alternate, so the
load of a shared machine falls on both sides alike).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import fleet_parallel, lock_overhead, noop_latency, noop_provision, serve_first_request  # noqa: E402
from bench.hosts import REPO, Figure, bench_hosts  # noqa: E402

# Benchmarks other parts of labhop own: run when present, their output quoted.
OTHERS = {"tunnel_throughput.py": "Tunnel throughput vs raw `ssh -L`",
          "provision_offline.py": "Air-gapped provision, cold and warm",
          "provision_online.py": "Online provision vs `uv pip install` by hand",
          "kernels_noop.py": "No-op serve with three registered kernels",
          "slurm_serve.py": "Slurm: `serve --slurm` vs the hand-made sbatch recipe"}
OTHERS_TIMEOUT = 1800


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="runs per figure (serve: at most 5)")
    parser.add_argument("--quick", action="store_true", help="one run each, skip the others' benchmarks, write nothing")
    parser.add_argument("--out", default=str(REPO / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs
    started = time.monotonic()
    figures: list[Figure] = []
    notes: list[str] = []
    with bench_hosts(fleet_parallel.HOSTS, say=lambda text: print(f"  {text}", flush=True)) as hosts:
        isolated = hosts.topo.isolated
        for module, n in ((noop_provision, runs), (noop_latency, runs), (fleet_parallel, runs), (lock_overhead, runs),
                          (serve_first_request, min(runs, 5))):
            print(f"running {module.__name__} ({n} run(s))...", flush=True)
            found, said = module.run(hosts, n)
            for figure in found:
                print(f"  {figure.line()}", flush=True)
            figures += found
            notes += said
    others: dict[str, str] = {}
    if not args.quick:
        for script, title in OTHERS.items():
            path = REPO / "bench" / script
            if path.exists():
                print(f"running {script}...", flush=True)
                others[title] = run_other(path)
    print(f"done in {time.monotonic() - started:.0f}s")
    if not args.quick:
        Path(args.out).write_text(render(figures, notes, others, runs, isolated))
        print(f"wrote {args.out}")
    return 0


def run_other(path: Path) -> str:
    try:
        proc = subprocess.run([sys.executable, str(path)], cwd=REPO, capture_output=True, text=True,
                              timeout=OTHERS_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"(timed out after {OTHERS_TIMEOUT}s)"
    text = proc.stdout.strip() or "(no output)"
    if proc.returncode != 0:
        text += f"\n(exit {proc.returncode}) {proc.stderr.strip()[-800:]}"
    return text


def render(figures: list[Figure], notes: list[str], others: dict[str, str], runs: int, isolated: bool) -> str:
    load = os.getloadavg()
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python bench/run_all.py` on {datetime.date.today().isoformat()}: "
        f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPU(s), "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end (a shared machine: absolute "
        f"times vary; the ratios are measured side by side, runs alternating).",
        "",
        "Hosts: the test harness's real OpenSSH topology, laptop -> jump -> target"
        + (" in network namespaces (the targets are reachable only through the jump host)" if isolated
           else " on loopback (no network namespaces here)")
        + "; fleet figures add target2 and target3 behind the same jump host. The controller's Python keeps "
        "its bytecode cache, as on a user's machine.",
        "",
        "| figure | ratio | goal | labhop (median) | baseline (median) | runs |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        goal = f"<= {f.goal:g}x: {f.verdict}" if f.goal else ""
        lines.append(f"| {f.name} | **{f.ratio:.2f}x** | {goal} | {f.subject}: {f.subject_median:.3f}s | "
                     f"{f.baseline}: {f.baseline_median:.3f}s | {len(f.subject_times)} |")
    lines += ["", "All runs (seconds):", ""]
    for f in figures:
        lines.append(f"- {f.name}: labhop {', '.join(f'{t:.3f}' for t in f.subject_times)}; "
                     f"baseline {', '.join(f'{t:.3f}' for t in f.baseline_times)}")
    if notes:
        lines += ["", "## Where the time goes", ""] + [f"- {n}" for n in notes]
    for title, text in others.items():
        lines += ["", f"## {title}", "", "```", text, "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
