"""No-op `serve` with three registered kernels vs a no-op `serve` without any.

Discovery rides inside the one probe (no SSH round trip of its own): it reads the environments'
files (pyvenv.cfg, lib/pythonX.Y, site-packages) and the registered kernelspecs, and plans three
unchanged kernel.json files as skips. Two prefixes on the same target share one labhop venv (a
symlink) and each runs its own JupyterLab: `kernels` lists three venvs with ipykernel, `plain`
lists none (and no conda is there). Both re-runs must find nothing to do.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

try:
    from bench.hosts import TARGET_PYTHON, BenchHosts, Figure, main, side_by_side
except ImportError:  # run as a script: python bench/kernels_noop.py
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from bench.hosts import TARGET_PYTHON, BenchHosts, Figure, main, side_by_side

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
port = 18890
kernels = [{kernels}]

[hosts.plain]
hostname = "target"
prefix = "~/.labhop-plain"
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
    finally:
        for name in ("kernels", "plain"):
            hosts.fab("stop", hosts=[name], check=False)
    figure = Figure("no-op `serve` with 3 registered kernels vs without", "fab -H kernels serve (3 kernels, no-op)",
                    "fab -H plain serve (no kernels, no-op)", subject, baseline, goal=GOAL)
    return [figure], [f"{registered} kernels registered by the first serve; re-runs skip them: "
                      "discovery reads files inside the probe, no extra SSH round trip"]


if __name__ == "__main__":
    main(run)
