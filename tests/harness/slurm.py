"""A real Slurm cluster (Debian's slurm-wlm + munge) behind the topology's target, the login node.

::

    laptop --> jump --> target = login node (slurmctld)  --> node ns lhnode-TAG (slurmd "node1")
                        eth1 10.231.N.129/25  <------------>  eth0 10.231.N.130/25

* The node's link is the upper half of the jump<->target /24 (the target's longer /25 route wins there);
  the node has only that connected route, so only the login node reaches it: a forward that skips the
  login node fails, as on a real cluster.
* Daemons enter namespaces with ``nsenter --net`` (``ip netns exec`` remounts /sys and slurmd then dies
  with "No filesystem mounted on /sys/fs/cgroup"), each under ``unshare --uts`` with its own hostname:
  slurmctld refuses to run unless it is ``SlurmctldHost``, and a job's ``hostname`` is then the node's.
* Machine-wide state (one cluster per machine at a time, under a lock): ``/etc/slurm/slurm.conf`` (the
  path every client on the login node reads, as on a real cluster; an existing one is restored), two
  ``/etc/hosts`` lines (node and login names for the login node's resolver), munged when it was not
  running. ``/run/labhop-testnet/slurm.json`` names the owner: the next run undoes what a crashed
  one left behind.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import topology as topo_mod
from .topology import Topology

NODE_NS_PREFIX = "lhnode-"
NODE_NAME = "node1"
LOGIN_NAME = "lhlogin"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
HOSTS = Path("/etc/hosts")
HOSTS_MARK = "# labhop-test-slurm"
STATE = topo_mod.STATE_DIR / "slurm.json"  # not *.state: topology.py owns those
LOCK = topo_mod.STATE_DIR / "slurm.lock"
MUNGE_SOCKET_DIR = Path("/run/munge")

__all__ = ["SlurmCluster", "start_slurm", "slurm_available", "cleanup_stale_slurm"]


def slurm_available() -> tuple[bool, str]:
    missing = [b for b in ("slurmctld", "slurmd", "munged", "sbatch", "nsenter", "unshare") if not shutil.which(b)]
    if missing:
        return False, f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return False, "the Slurm harness needs root (namespaces, /etc/slurm, munged)"
    return topo_mod.netns_available()


def _sh(argv: Sequence[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=check)


def nsenter_argv(netns: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{netns}", *argv]


# -- machine-wide state, owned by one run -----------------------------------------------------------


def _hosts_remove() -> None:
    try:
        lines = HOSTS.read_text().splitlines(keepends=True)
    except OSError:
        return
    kept = [line for line in lines if HOSTS_MARK not in line]
    if kept != lines:
        # in place (not by rename): /etc/hosts is often a bind mount in containers
        with open(HOSTS, "r+") as f:
            f.seek(0)
            f.write("".join(kept))
            f.truncate()


def _hosts_add(entries: dict[str, str]) -> None:
    _hosts_remove()
    text = HOSTS.read_text()
    if text and not text.endswith("\n"):
        text += "\n"
    text += "".join(f"{addr} {name} {HOSTS_MARK}\n" for name, addr in entries.items())
    with open(HOSTS, "r+") as f:
        f.seek(0)
        f.write(text)
        f.truncate()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _undo(state: dict) -> None:
    """Undo what ``state`` records (a live cluster's or a crashed run's)."""
    for pid in state.get("pids", []):
        _kill(int(pid))
    if state.get("munged_pid"):
        _kill(int(state["munged_pid"]))
    ns = state.get("node_ns")
    if ns:
        topo_mod._delete_netns(ns)
    _hosts_remove()
    backup = state.get("conf_backup")
    if backup and Path(backup).exists():
        shutil.move(backup, SLURM_CONF)
    elif state.get("conf_written"):
        SLURM_CONF.unlink(missing_ok=True)
    STATE.unlink(missing_ok=True)


class _Lock:
    def __enter__(self) -> "_Lock":
        topo_mod.STATE_DIR.mkdir(parents=True, exist_ok=True)
        self._fh = open(LOCK, "w")
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


def _owner_alive(state: dict) -> bool:
    pid = int(state.get("owner_pid", 0))
    return bool(pid) and topo_mod._starttime(pid) == state.get("owner_start")


def cleanup_stale_slurm() -> list[str]:
    """Undo a crashed run's cluster (its owner is gone); leave a live one alone."""
    if os.geteuid() != 0:
        return []
    removed = []
    try:
        state = json.loads(STATE.read_text())
    except (OSError, ValueError):
        state = None
    if state is not None and not _owner_alive(state):
        _undo(state)
        removed.append("slurm cluster of a dead run")
    live_tags = set(topo_mod._live_tags())
    for ns in topo_mod._list_netns():
        if ns.startswith(NODE_NS_PREFIX) and ns[len(NODE_NS_PREFIX):] not in live_tags:
            topo_mod._delete_netns(ns)
            removed.append(f"netns {ns}")
    return removed


# -- the cluster ------------------------------------------------------------------------------------


@dataclass
class SlurmCluster:
    topology: Topology
    workdir: Path
    node_ns: str
    node_address: str
    login_address: str
    node_name: str = NODE_NAME
    login_name: str = LOGIN_NAME
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _state: dict = field(default_factory=dict)
    _closed: bool = False

    # what a test does behind labhop's back, on the login node (its namespace) as root
    def login_run(self, *argv: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
        return _sh(nsenter_argv(self.topology.target_netns or "", *argv), check=check, timeout=timeout)

    def node_run(self, *argv: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
        return _sh(nsenter_argv(self.node_ns, *argv), check=check, timeout=timeout)

    def node_popen(self, *argv: str) -> subprocess.Popen:
        return subprocess.Popen(nsenter_argv(self.node_ns, *argv), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    def scontrol(self, *args: str) -> subprocess.CompletedProcess:
        return self.login_run("scontrol", *args)

    def node_state(self) -> str:
        return self.login_run("sinfo", "-h", "-N", "-o", "%T").stdout.strip()

    def wait_node(self, states: tuple[str, ...] = ("idle",), timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.node_state()
            if state in states:
                return state
            time.sleep(0.3)
        raise RuntimeError(f"node {self.node_name} is {state!r}, not {states}, after {timeout}s:\n"
                           f"{self.log_tail()}")

    def drain(self, reason: str = "labhop test") -> None:
        self.scontrol("update", f"nodename={self.node_name}", "state=drain", f"reason={reason}")

    def resume(self) -> None:
        self.scontrol("update", f"nodename={self.node_name}", "state=resume")
        self.wait_node(("idle", "mixed", "allocated"))

    def restart_slurmctld(self, downtime: float = 0.0, until_asked: Optional[Callable[[], bool]] = None) -> None:
        """Stop slurmctld (SIGTERM, it saves its state), wait ``downtime`` seconds (or, with ``until_asked``,
        until that says the controller was missed, at most ``downtime``), start it again."""
        proc = self.procs.pop("slurmctld")
        proc.terminate()
        proc.wait(timeout=30)
        deadline = time.monotonic() + downtime
        while time.monotonic() < deadline and not (until_asked and until_asked()):
            time.sleep(0.2)
        self._start_slurmctld()

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for name in ("slurmctld", "slurmd"):
            path = self.workdir / f"{name}.log"
            if path.exists():
                out.append(f"--- {name}.log\n" + "".join(path.read_text(errors="replace").splitlines(True)[-lines:]))
        return "\n".join(out)

    def _spawn(self, name: str, netns: str, hostname: str, argv: Sequence[str]) -> None:
        inner = f"hostname {hostname} && exec " + " ".join(argv)
        log = open(self.workdir / f"{name}.out", "ab")
        proc = subprocess.Popen(nsenter_argv(netns, "unshare", "--uts", "sh", "-c", inner),
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        self.procs[name] = proc
        self._record()

    def _start_slurmctld(self) -> None:
        self._spawn("slurmctld", self.topology.target_netns or "", self.login_name, ["slurmctld", "-D", "-i"])

    def _start_slurmd(self) -> None:
        self._spawn("slurmd", self.node_ns, self.node_name, ["slurmd", "-D", "-N", self.node_name])

    def _record(self) -> None:
        self._state["pids"] = [p.pid for p in self.procs.values()]
        STATE.write_text(json.dumps(self._state))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        # jobs' processes (slurmstepd and what it started) live in the node's namespace: killed with it.
        # This run holds the machine's Slurm lock since start_slurm: undo, then let go.
        try:
            _undo(self._state)
        finally:
            if self._lock_fh is not None:
                self._lock_fh.close()

    _lock_fh: Any = None

    def __enter__(self) -> "SlurmCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _munge_ok() -> bool:
    try:
        cred = _sh(["munge", "-n"], check=False, timeout=10)
        if cred.returncode != 0:
            return False
        back = subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, text=True, timeout=10)
        return back.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _start_munged(state: dict) -> None:
    if _munge_ok():
        return
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        _sh(["mungekey", "--create", "--keyfile", str(key)])
        shutil.chown(key, "munge", "munge")
        key.chmod(0o600)
    _sh(["install", "-d", "-o", "munge", "-g", "munge", "-m", "0755", str(MUNGE_SOCKET_DIR)])
    _sh(["runuser", "-u", "munge", "--", "munged", "--force"])
    deadline = time.monotonic() + 10
    while not _munge_ok():
        if time.monotonic() > deadline:
            raise RuntimeError("munged did not come up")
        time.sleep(0.1)
    pidfile = MUNGE_SOCKET_DIR / "munged.pid"
    if pidfile.exists():
        state["munged_pid"] = int(pidfile.read_text().split()[0])


def _conf(cluster: SlurmCluster) -> str:
    w = cluster.workdir
    return "\n".join([
        "# written by labhop's test harness (tests/harness/slurm.py); removed when its run ends",
        "ClusterName=labhoptest",
        f"SlurmctldHost={cluster.login_name}({cluster.login_address})",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        "MpiDefault=none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SchedulerType=sched/builtin",
        "ReturnToService=2",
        # a job past its --time is killed at once (the walltime test waits for it)
        "OverTimeLimit=0",
        "KillWait=2",
        "MinJobAge=60",
        f"StateSaveLocation={w / 'state'}",
        f"SlurmdSpoolDir={w / 'spool'}",
        f"SlurmctldPidFile={w / 'slurmctld.pid'}",
        f"SlurmdPidFile={w / 'slurmd.pid'}",
        f"SlurmctldLogFile={w / 'slurmctld.log'}",
        f"SlurmdLogFile={w / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        f"NodeName={cluster.node_name} NodeAddr={cluster.node_address} CPUs={os.cpu_count() or 1} State=UNKNOWN",
        f"PartitionName=debug Nodes={cluster.node_name} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def start_slurm(topology: Topology, workdir: Path) -> SlurmCluster:
    """Create the node namespace behind ``topology``'s target and start munged, slurmctld, slurmd;
    return once ``sinfo`` shows the node idle."""
    if not topology.isolated or topology._net is None:
        raise RuntimeError("the Slurm harness needs the network-namespace topology")
    workdir = Path(workdir).resolve()
    for sub in ("state", "spool"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    net = topology._net
    tag = net.tag
    base = net.link2.network_address
    cluster = SlurmCluster(topology=topology, workdir=workdir, node_ns=NODE_NS_PREFIX + tag,
                           node_address=str(base + 130), login_address=str(base + 129))
    lock = _Lock().__enter__()
    try:
        cleanup_stale_slurm()
        if STATE.exists():
            raise RuntimeError(f"another test run owns the machine's Slurm cluster ({STATE})")
        cluster._lock_fh = lock._fh  # held until close(): one cluster per machine
    except BaseException:
        lock.__exit__()
        raise
    state = cluster._state
    state.update(owner_pid=os.getpid(), owner_start=topo_mod._starttime(os.getpid()), node_ns=cluster.node_ns,
                 pids=[])
    STATE.write_text(json.dumps(state))
    try:
        _build_node_link(cluster)
        _start_munged(state)
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        if SLURM_CONF.exists():
            backup = topo_mod.STATE_DIR / "slurm.conf.orig"
            shutil.copy2(SLURM_CONF, backup)
            state["conf_backup"] = str(backup)
        SLURM_CONF.write_text(_conf(cluster))
        state["conf_written"] = True
        _hosts_add({cluster.node_name: cluster.node_address, cluster.login_name: cluster.login_address})
        STATE.write_text(json.dumps(state))
        cluster._start_slurmctld()
        cluster._start_slurmd()
        cluster.wait_node(("idle",), timeout=60)
        return cluster
    except BaseException:
        try:
            cluster.close()
        except Exception:
            pass
        raise


def _build_node_link(cluster: SlurmCluster) -> None:
    t, n = cluster.topology.target_netns or "", cluster.node_ns
    ip = topo_mod._ip
    ip("netns", "add", n)
    ip("-n", n, "link", "set", "lo", "up")
    _sh(nsenter_argv(n, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                     "net.ipv6.conf.default.disable_ipv6=1"))
    ip("-n", t, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", n)
    ip("-n", t, "addr", "add", f"{cluster.login_address}/25", "dev", "eth1")
    ip("-n", t, "link", "set", "eth1", "up")
    ip("-n", n, "addr", "add", f"{cluster.node_address}/25", "dev", "eth0")
    ip("-n", n, "link", "set", "eth0", "up")
    if "default" in ip("-n", n, "route", "show").stdout:
        raise RuntimeError("node namespace unexpectedly has a default route")
