"""No-op `serve` with three registered kernels vs a no-op `serve` without any.

Discovery rides inside the one probe (no SSH round trip of its own): it reads the environments'
files (pyvenv.cfg, lib/pythonX.Y, site-packages) and the registered kernelspecs, and plans three
unchanged kernel.json files as skips. Two prefixes on the same target share one labhop venv (a
symlink) and each runs its own JupyterLab: `kernels` lists three venvs with ipykernel, `plain`
lists none (and no conda is there); each its own bin_dir (the rmate link). Both re-runs must find
nothing to do.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys

try:
    from bench.hosts import REPO, TARGET_PYTHON, BenchHosts, Figure, main, side_by_side
except ImportError:  # run as a script: python bench/kernels_noop.py
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from bench.hosts import REPO, TARGET_PYTHON, BenchHosts, Figure, main, side_by_side

GOAL = 1.1
ENVS = ("torch", "proj", "analysis")


def run(hosts: BenchHosts, runs: int) -> tuple[list[Figure], list[str]]:
    home = hosts.targets[0].home
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv (labhop's test extras) makes the three environments")
    for name in ENVS:  # made on the controller, in the target's home (same filesystem, the target's python)
        env = home / "envs" / name
        subprocess.run([uv, "venv", "--quiet", "--python", TARGET_PYTHON, str(env)], check=True)
        subprocess.run([uv, "pip", "install", "--quiet", "--python", str(env / "bin" / "python"), "ipykernel"],
                       check=True, env={**os.environ, "UV_CACHE_DIR": str(hosts.workdir / "caches" / "uv")})
    for prefix in (".labhop-kernels", ".labhop-plain"):
        (home / prefix).mkdir(mode=0o700)
        (home / prefix / "venv").symlink_to(home / ".labhop" / "venv")
    kernels = ", ".join(f'"~/envs/{name}"' for name in ENVS)
    hosts.inventory.write_text(f"""
[defaults]
python = "{TARGET_PYTHON}"

[hosts.kernels]
hostname = "target"
prefix = "~/.labhop-kernels"
bin_dir = "~/.local/bin-kernels"
port = 18890
kernels = [{kernels}]

[hosts.plain]
hostname = "target"
prefix = "~/.labhop-plain"
bin_dir = "~/.local/bin-plain"
port = 18891
""")
    first = hosts.fab("serve", hosts=["kernels"]).stdout
    registered = first.count("changed  register kernel")
    if registered != len(ENVS):
        raise RuntimeError(f"expected {len(ENVS)} kernels registered, got {registered}:\n{first}")
    hosts.fab("serve", hosts=["plain"])

    def noop(name: str) -> None:
        out = hosts.fab("serve", hosts=[name]).stdout
        if "serve: nothing to do" not in out:
            raise RuntimeError(f"not a no-op serve on {name}:\n{out}")

    try:
        subject, baseline = side_by_side(runs, lambda: noop("kernels"), lambda: noop("plain"))
        split = {name: phases(hosts, name, runs) for name in ("kernels", "plain")}
    finally:
        for name in ("kernels", "plain"):
            hosts.fab("stop", hosts=[name], check=False)
    figure = Figure("no-op `serve` with 3 registered kernels vs without", "fab -H kernels serve (3 kernels, no-op)",
                    "fab -H plain serve (no kernels, no-op)", subject, baseline, goal=GOAL)
    notes = [f"{registered} kernels registered by the first serve; re-runs skip them: "
             "discovery reads files inside the probe, no extra SSH round trip"]
    for name, marks in split.items():
        notes.append(f"where `serve -H {name}`'s time goes (medians of {runs}, bench/phases.py): "
                     + ", ".join(f"{key} {seconds:.3f}s" for key, seconds in marks.items()))
    return [figure], notes


def phases(hosts: BenchHosts, name: str, runs: int) -> dict[str, float]:
    argv = [sys.executable, str(REPO / "bench" / "phases.py"), "-r", str(REPO), "-S", str(hosts.ssh_config),
            "-H", name, "serve"]
    seen: list[dict[str, float]] = []
    for _ in range(runs):
        done = subprocess.run(argv, env=hosts.env(), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              check=True, cwd=hosts.workdir)
        seen.append(json.loads(done.stderr.strip().splitlines()[-1]))
    return {key: statistics.median(m.get(key, 0.0) for m in seen) for key in seen[0]}


if __name__ == "__main__":
    main(run)
