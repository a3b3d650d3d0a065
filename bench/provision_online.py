"""Online provision: a cold `fab provision` vs `uv pip install jupyterlab bcrypt rmate` by hand.

    python bench/provision_online.py [runs, default 3]

The target is a real sshd on loopback (tests/harness/sshd.py, a throwaway home) whose sessions
reach the package index the way this machine does. Side by side, runs alternating:

- labhop: `fab -H target provision` into a fresh prefix, the target's uv cache emptied first; the
  controller already holds uv's wheel for the target (one download per target signature, like a
  wheelhouse), so the run pushes it over SSH, unpacks it, makes the venv and installs.
- by hand: `ssh target 'uv pip install --system-certs --python VENV jupyterlab bcrypt rmate'` with an
  empty uv cache, the same uv binary, into a venv made beforehand (untimed: the stricter baseline).

Goal: labhop <= 1.5x by hand. Also one fully cold run (the controller downloads uv first), untimed
in the ratio, to show what a first target of a new kind costs.
"""
from __future__ import annotations

import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from bench.hosts import FAB, REPO, TARGET_PYTHON, timed
except ImportError:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.hosts import FAB, REPO, TARGET_PYTHON, timed

from labhop.packages import PACKAGES  # noqa: E402
from tests.harness.sshd import start_sshd, write_ssh_config  # noqa: E402

GOAL = 1.5
STEP = re.compile(r"changed  (.+?) \((\d+\.\d)s\)$")
LABELS = (("push ", "push uv"), ("unpack uv", "unpack uv"), ("unpack ", "sha256"),
          ("create virtual environment", "venv"), ("install ", "install"), ("link ", "link rmate"),
          ("add ", "login PATH"), ("create ", "prefix"))


def main(runs: int) -> int:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="labhop-bench-online-"))
    server = start_sshd(work, "target")
    try:
        config = write_ssh_config(work / "ssh_config", [server])
        home = server.home
        names = ["warm", "cold"] + [f"run{i}" for i in range(runs)]
        inventory = work / "inventory.toml"
        inventory.write_text(f'[defaults]\npython = "{TARGET_PYTHON}"\n' + "".join(
            f'\n[hosts.{n}]\nhostname = "target"\nprefix = "{home}/.labhop-{n}"\nbin_dir = "{home}/.local/bin-{n}"\n'
            for n in names))
        cache = work / "controller-cache"

        def fab(name: str, *args: str, cache_dir: Path = cache) -> str:
            env = {k: v for k, v in os.environ.items() if not k.startswith("LABHOP_")}
            env.update(LABHOP_INVENTORY=str(inventory), LABHOP_CACHE_DIR=str(cache_dir))
            proc = subprocess.run([FAB, "-r", str(REPO), "-S", str(config), "-H", name, *args], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                raise RuntimeError(f"fab -H {name} {' '.join(args)} exited {proc.returncode}:\n"
                                   f"{proc.stdout}{proc.stderr}")
            return proc.stdout

        def on_target(script: str) -> str:
            done = subprocess.run(["ssh", "-F", str(config), "target", f"sh -c {shlex.quote(script)}"],
                                  capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                raise RuntimeError(f"on the target: {script}\n{done.stderr}")
            return done.stdout

        # The fully cold run: nothing cached on the controller either (uv's wheel is downloaded first).
        on_target("rm -rf ~/.cache/uv")
        out = ""

        def first() -> None:
            nonlocal out
            out = fab("cold", "provision", cache_dir=cache)
        fully_cold = timed(first)
        if "with uv" not in out:
            raise RuntimeError(f"the cold provision did not install with uv:\n{out}")
        uv = f"{home}/.labhop-cold/bin/uv"
        version = on_target(f"{uv} --version").split()[1]
        reqs = " ".join(shlex.quote(r) for r in PACKAGES.values())
        by_hand = (f"UV_CACHE_DIR=$HOME/.cache/uv-by-hand {uv} pip install --quiet --system-certs "
                   f"--python /tmp/bench-by-hand/bin/python {reqs}")
        print(f"target {TARGET_PYTHON} over SSH on loopback; uv {version}; fully cold provision "
              f"(controller downloads uv first): {fully_cold:.1f}s", flush=True)

        labhop, hand, breakdown = [], [], []
        for i, name in enumerate(names[2:]):
            def subject(name: str = name) -> None:
                nonlocal out
                out = fab(name, "provision")

            def baseline() -> None:
                on_target(by_hand)

            for side in ((subject, baseline) if i % 2 == 0 else (baseline, subject)):
                on_target("rm -rf ~/.cache/uv ~/.cache/uv-by-hand /tmp/bench-by-hand && "
                          f"{uv} venv -q --python {TARGET_PYTHON} /tmp/bench-by-hand")
                seconds = timed(side)
                (labhop if side is subject else hand).append(seconds)
                if side is subject:
                    if "with uv" not in out:
                        raise RuntimeError(f"provision did not install with uv:\n{out}")
                    breakdown.append({m.group(1): float(m.group(2)) for m in map(STEP.search, out.splitlines()) if m})
            print(f"  run {i + 1}: labhop {labhop[-1]:.1f}s, by hand {hand[-1]:.1f}s", flush=True)
        on_target("rm -rf /tmp/bench-by-hand ~/.cache/uv-by-hand")
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)

    med = statistics.median
    ratio = med(labhop) / med(hand)
    print(f"cold online provision vs `uv pip install` by hand (empty caches): {ratio:.2f}x (goal <= {GOAL:g}x: "
          f"{'met' if ratio <= GOAL else 'NOT met'}); labhop median {med(labhop):.1f}s "
          f"[{', '.join(f'{t:.1f}' for t in labhop)}] vs by hand {med(hand):.1f}s "
          f"[{', '.join(f'{t:.1f}' for t in hand)}]")
    pairs = [a / b for a, b in zip(labhop, hand)]
    print(f"  run by run (each pair side by side): {', '.join(f'{r:.2f}x' for r in pairs)}, median {med(pairs):.2f}x")
    steps: dict[str, list[float]] = {}
    for run in breakdown:
        for description, seconds in run.items():
            key = next((label for start, label in LABELS if description.startswith(start)), description)
            steps.setdefault(key, []).append(seconds)
    print(f"  labhop's steps (medians): {', '.join(f'{k} {med(v):.1f}s' for k, v in steps.items())}")
    print(f"(benchmark took {time.monotonic() - started:.0f}s; load average now "
          f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
