"""The benchmarks' hosts: the test harness's real laptop -> jump -> target topology.

``bench_hosts(n)`` builds it (network namespaces: the targets are reachable only
through the jump host and have no route to a package index), adds ``n - 1`` more
sshds in the target's namespace (target2, target3 ... behind the same jump host),
and gives each target a provisioned labhop venv in its own throwaway home: the
install runs on the controller against that home (same filesystem, same
/usr/bin/python3 as the target's sessions), since the targets have no index.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.harness.sshd import SshServer, start_sshd, write_ssh_config  # noqa: E402
from tests.harness.topology import Topology, build_topology  # noqa: E402

# The console script pip installs (the pyenv shim in front of it adds ~0.1 s of bash).
FAB = str(Path(sys.executable).with_name("fab"))
TARGET_PYTHON = "/usr/bin/python3"  # what the targets' sessions find first on PATH


@dataclass
class BenchHosts:
    topo: Topology
    targets: list[SshServer]
    ssh_config: Path
    inventory: Path
    workdir: Path

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABHOP_")}
        env["LABHOP_INVENTORY"] = str(self.inventory)
        # Bytecode cached as on a user's machine (this sandbox sets PYTHONDONTWRITEBYTECODE,
        # which recompiles every module on every run), kept out of the work tree.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.workdir / "pycache")
        env.update(extra)
        return env

    def fab(self, *args: str, hosts: Sequence[str] = (), check: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess:
        argv = [FAB, "-r", str(REPO), "-S", str(self.ssh_config)]
        if hosts:
            argv += ["-H", ",".join(hosts)]
        proc = subprocess.run([*argv, *args], cwd=self.workdir, env=self.env(), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise RuntimeError(f"fab {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def ssh(self, host: str, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-F", str(self.ssh_config), host, *command], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def noop_provision(self, name: str = "target") -> None:
        """`fab -H NAME provision`, which must find nothing to do: the no-op the figures time."""
        out = self.fab("provision", hosts=[name]).stdout
        if "provision: nothing to do" not in out:
            raise RuntimeError(f"not a no-op provision on {name}:\n{out}")

    def ssh_true(self, name: str = "target") -> None:
        """`ssh NAME true`: the baseline on the same path."""
        if self.ssh(name, "true").returncode != 0:
            raise RuntimeError(f"ssh {name} true failed")

    def in_target_ns(self, *argv: str) -> list[str]:
        return self.topo.target_exec_argv(*argv)

    def sessions(self, server: SshServer) -> tuple[int, int]:
        """(connections accepted, sessions started) so far, from the server's sshd log."""
        log = server.log_path.read_text(errors="replace")
        return log.count("Accepted publickey"), log.count("Starting session")


@contextmanager
def bench_hosts(n_targets: int = 1, *, provision: bool = True,
                say: Callable[[str], None] = print) -> Iterator[BenchHosts]:
    workdir = Path(tempfile.mkdtemp(prefix="labhop-bench-"))
    topo = build_topology(workdir / "topology")
    extra: list[SshServer] = []
    try:
        if not topo.isolated:
            say(f"note: no network namespaces ({topo.reason}); the targets are on loopback")
        for i in range(2, n_targets + 1):
            extra.append(start_sshd(workdir, f"target{i}", address=topo.target.address, netns=topo.target_netns,
                                    client_key=topo.target.identity_file,
                                    port=None if topo.target_netns is None else 2222 + i))
        targets = [topo.target, *extra]
        config = write_ssh_config(workdir / "ssh_config", [topo.jump, *targets],
                                  jumps={t.name: ["jump"] for t in targets})
        inventory = workdir / "inventory.toml"
        inventory.write_text(f'[defaults]\npython = "{TARGET_PYTHON}"\n')
        hosts = BenchHosts(topo=topo, targets=targets, ssh_config=config, inventory=inventory, workdir=workdir)
        if provision:
            for target in targets:
                started = time.monotonic()
                provision_home(hosts, target.home)
                say(f"provisioned {target.name} ({target.home}) in {time.monotonic() - started:.0f}s")
        yield hosts
    finally:
        for server in extra:
            server.stop()
        topo.close()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


def provision_home(hosts: BenchHosts, home: Path) -> None:
    """labhop's venv in a target's home, installed by a local run with HOME pointing there."""
    caches = hosts.workdir / "caches"  # one download for all the targets
    env = hosts.env(HOME=str(home), UV_CACHE_DIR=str(caches / "uv"), PIP_CACHE_DIR=str(caches / "pip"))
    proc = subprocess.run([FAB, "-r", str(REPO), "provision"], cwd=hosts.workdir, env=env,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"provisioning {home} failed:\n{proc.stdout}\n{proc.stderr}")


# -- measuring ---------------------------------------------------------------------------------

def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def side_by_side(runs: int, subject: Callable[[], object], baseline: Callable[[], object],
                 *, warmup: int = 1) -> tuple[list[float], list[float]]:
    """Alternate subject and baseline (so load on the shared machine hits both alike)."""
    for _ in range(warmup):
        subject()
        baseline()
    a: list[float] = []
    b: list[float] = []
    for i in range(runs):
        order = [(subject, a), (baseline, b)] if i % 2 == 0 else [(baseline, b), (subject, a)]
        for func, into in order:
            into.append(timed(func))
    return a, b


@dataclass
class Figure:
    """One benchmark line: subject vs baseline, medians, ratio against a goal."""

    name: str
    subject: str
    baseline: str
    subject_times: list[float]
    baseline_times: list[float]
    goal: Optional[float] = None
    notes: str = ""

    @property
    def subject_median(self) -> float:
        return statistics.median(self.subject_times)

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline_times)

    @property
    def ratio(self) -> float:
        return self.subject_median / self.baseline_median

    @property
    def verdict(self) -> str:
        if self.goal is None:
            return ""
        return "met" if self.ratio <= self.goal else "NOT met"

    def line(self) -> str:
        goal = f" (goal <= {self.goal:g}x: {self.verdict})" if self.goal else ""
        return (f"{self.name}: {self.ratio:.2f}x{goal}  {self.subject} {self.subject_median:.3f}s vs "
                f"{self.baseline} {self.baseline_median:.3f}s, medians of {len(self.subject_times)}")


def main(run: Callable[[BenchHosts, int], tuple[list, list[str]]], *,
         default_runs: int = 7, n_targets: int = 1) -> None:
    """A benchmark script's entry: `python bench/X.py [RUNS]` prints its figures and notes."""
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else default_runs
    with bench_hosts(n_targets) as h:
        figures, notes = run(h, runs)
        for f in figures:
            print(f.line())
        for n in notes:
            print(n)
