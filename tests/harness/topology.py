"""A two-hop "laptop -> jump -> target" topology of real sshd servers.

Isolated variant (root + working ``ip netns``)::

    root ns ("laptop")          ns lhjump-TAG                  ns lhtgt-TAG
    lhv-TAG 10.231.N.1/24 <---> eth0 10.231.N.2/24
                                eth1 10.231.N+1.1/24 <-------> eth0 10.231.N+1.2/24
                                sshd on 10.231.N.2:2222        sshd on 10.231.N+1.2:2222

* Before anything else ``unreachable 10.231.0.0/16`` is routed in the root
  namespace, so nothing for the test range can ever leave by the default
  route.  The root ns only has the connected route of its own veth, so the
  target's subnet hits the unreachable route: the target is *not* reachable
  directly from the "laptop".
* The jump ns has forwarding off; the target ns has only its connected
  route (no default route) -- it cannot reach any package index.
* Both sshds share the filesystem with the test process, so keys, configs and
  homes under ``workdir`` work as usual.

Resources are named ``lhjump-TAG``, ``lhtgt-TAG`` and ``lhv-TAG`` and owned by
a state file ``/run/labhop-testnet/TAG.state`` (pid + start time of the owner).
Every ``build_topology`` first removes resources whose owner is gone, so a
crashed run is cleaned up by the next one; concurrent runs (pytest-xdist) get
different TAGs and subnets and do not touch each other.

Fallback (not root / no netns): two sshds on 127.0.0.1, ``isolated=False`` and
a ``reason``.  Under ``CI=true`` the fallback is refused (raises) unless
``LABHOP_TEST_ALLOW_LOOPBACK_TOPOLOGY=1``.
"""
from __future__ import annotations

import atexit
import fcntl
import ipaddress
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .sshd import SshServer, make_client_key, start_sshd, write_ssh_config

TEST_SUPERNET = ipaddress.ip_network("10.231.0.0/16")
JUMP_NS_PREFIX = "lhjump-"
TARGET_NS_PREFIX = "lhtgt-"
VETH_PREFIX = "lhv-"
STATE_DIR = Path("/run/labhop-testnet")
ROUTE_MARKER = STATE_DIR / "unreachable-route.ours"
SSHD_PORT = 2222

__all__ = [
    "Topology",
    "build_topology",
    "cleanup_stale",
    "netns_argv",
    "netns_available",
    "TEST_SUPERNET",
]


def netns_argv(netns: str | None, *argv: str) -> list[str]:
    """``argv`` run inside ``netns`` (unchanged when ``netns`` is None)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def _sh(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=check)


@dataclass
class Topology:
    jump: SshServer
    target: SshServer
    ssh_config: Path
    known_hosts: Path
    isolated: bool
    reason: str
    # extras -----------------------------------------------------------
    workdir: Path | None = None
    jump_netns: str | None = None
    target_netns: str | None = None
    #: the root-namespace ("laptop") end of the laptop<->jump link
    laptop_address: str | None = None
    _net: "_NetResources | None" = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    def ssh_argv(self, host: str, *command: str) -> list[str]:
        """``ssh -F <ssh_config> host command...`` (``host``: "jump"/"target")."""
        return ["ssh", "-F", str(self.ssh_config), host, *command]

    def run(self, host: str, command: str, *, check: bool = True, timeout: float = 30, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.ssh_argv(host, command), check=check, timeout=timeout, **kw)

    def target_exec_argv(self, *argv: str) -> list[str]:
        """Run a local command *as if on the target's network* (inside its ns)."""
        return netns_argv(self.target_netns, *argv)

    def close(self) -> None:
        """Stop both sshds and remove namespaces, veths, the route. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for server in (self.target, self.jump):
            if server is not None:
                server.stop()
        if self._net is not None:
            self._net.teardown()

    def __enter__(self) -> "Topology":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------
# ownership / stale cleanup


def _starttime(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[19]


def _owner_token() -> str:
    return f"{os.getpid()} {_starttime(os.getpid())}"


def _state_files() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    if not STATE_DIR.is_dir():
        return out
    for f in STATE_DIR.glob("*.state"):
        try:
            pid, start, slot = f.read_text().split()
        except (OSError, ValueError):
            pid, start, slot = "0", "", "-1"
        out[f.stem] = {"pid": pid, "start": start, "slot": slot}
    return out


def _live_tags() -> dict[str, int]:
    """tag -> slot for runs whose owning process still exists."""
    live = {}
    for tag, st in _state_files().items():
        pid = int(st["pid"]) if st["pid"].isdigit() else 0
        if pid and _starttime(pid) == st["start"]:
            live[tag] = int(st["slot"])
    return live


class _Lock:
    def __enter__(self):
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self._fh = open(STATE_DIR / "lock", "w")
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


def _list_netns() -> list[str]:
    res = _ip("netns", "list", check=False)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def _kill_netns_processes(ns: str) -> None:
    res = _ip("netns", "pids", ns, check=False)
    for pid in res.stdout.split():
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass


def _delete_netns(ns: str) -> None:
    _kill_netns_processes(ns)
    _ip("netns", "del", ns, check=False)


def _root_links() -> list[str]:
    res = _ip("-o", "link", "show", check=False)
    names = []
    for line in res.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def _route_present() -> bool:
    res = _ip("route", "show", "type", "unreachable", str(TEST_SUPERNET), check=False)
    return bool(res.stdout.strip())


def _cleanup_unlocked() -> list[str]:
    live = set(_live_tags())
    removed = []
    for ns in _list_netns():
        for prefix in (JUMP_NS_PREFIX, TARGET_NS_PREFIX):
            if ns.startswith(prefix) and ns[len(prefix):] not in live:
                _delete_netns(ns)
                removed.append(f"netns {ns}")
    for link in _root_links():
        if link.startswith(VETH_PREFIX) and link[len(VETH_PREFIX):] not in live:
            _ip("link", "del", link, check=False)
            removed.append(f"link {link}")
    for tag in _state_files():
        if tag not in live:
            (STATE_DIR / f"{tag}.state").unlink(missing_ok=True)
    if not live and ROUTE_MARKER.exists():
        _ip("route", "del", "unreachable", str(TEST_SUPERNET), check=False)
        ROUTE_MARKER.unlink(missing_ok=True)
        removed.append(f"route unreachable {TEST_SUPERNET}")
    return removed


def cleanup_stale() -> list[str]:
    """Remove namespaces/veths/state (and our unreachable route) left by
    topologies whose owning process is gone. Safe to call any time."""
    if os.geteuid() != 0:
        return []
    with _Lock():
        return _cleanup_unlocked()


def netns_available() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "not running as root (network namespaces need CAP_SYS_ADMIN/CAP_NET_ADMIN)"
    try:
        res = _ip("netns", "list", check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"`ip netns` unavailable: {exc}"
    if res.returncode != 0:
        return False, f"`ip netns list` failed: {res.stderr.strip()}"
    return True, ""


# --------------------------------------------------------------------------
# the isolated network


@dataclass
class _NetResources:
    tag: str
    slot: int
    jump_ns: str
    target_ns: str
    veth: str
    created: list[str] = field(default_factory=list)
    torn_down: bool = False

    @property
    def link1(self) -> ipaddress.IPv4Network:  # laptop <-> jump
        return ipaddress.ip_network(f"10.231.{2 * self.slot + 1}.0/24")

    @property
    def link2(self) -> ipaddress.IPv4Network:  # jump <-> target
        return ipaddress.ip_network(f"10.231.{2 * self.slot + 2}.0/24")

    def host(self, net: ipaddress.IPv4Network, n: int) -> str:
        return str(net.network_address + n)

    def teardown(self) -> None:
        if self.torn_down:
            return
        self.torn_down = True
        with _Lock():
            for ns in (self.target_ns, self.jump_ns):
                _delete_netns(ns)
            if self.veth in _root_links():
                _ip("link", "del", self.veth, check=False)
            (STATE_DIR / f"{self.tag}.state").unlink(missing_ok=True)
            # drops the unreachable route if we added it and nobody else runs
            _cleanup_unlocked()


def _pick_slot(live: dict[str, int]) -> int:
    used = set(live.values())
    res = _ip("-4", "-o", "addr", "show", check=False)
    for line in res.stdout.split():
        if line.startswith("10.231."):
            third = int(line.split(".")[2])
            used.add((third - 1) // 2)
    for slot in range(0, 127):
        if slot not in used:
            return slot
    raise RuntimeError("no free /24 pair left in 10.231.0.0/16")


def _ensure_unreachable_route() -> None:
    if _route_present():
        return
    # refuse to shadow a network that really exists on this machine (routes
    # inside the range that are not our own veths' connected routes)
    inside = _ip("-4", "route", "show", "root", str(TEST_SUPERNET), check=False).stdout
    foreign = [row for row in inside.splitlines() if row.strip() and f"dev {VETH_PREFIX}" not in row]
    if foreign:
        raise RuntimeError(f"{TEST_SUPERNET} is already in use on this machine:\n" + "\n".join(foreign))
    _ip("route", "add", "unreachable", str(TEST_SUPERNET))
    ROUTE_MARKER.write_text(_owner_token() + "\n")


def _assert_unreachable(address: str) -> None:
    out = _ip("route", "get", address, check=False)
    text = (out.stdout + out.stderr).strip()
    blocked = out.stdout.startswith("unreachable") or (
        out.returncode != 0 and "No route to host" in out.stderr
    )
    if not blocked:
        raise RuntimeError(
            f"safety check failed: {address} is routable from the root namespace ({text!r}); "
            "refusing to build the test network"
        )


def _build_network(tag: str) -> _NetResources:
    with _Lock():
        _cleanup_unlocked()
        # 1. never let the test range leave by the default route
        _ensure_unreachable_route()
        live = _live_tags()
        slot = _pick_slot(live)
        (STATE_DIR / f"{tag}.state").write_text(f"{_owner_token()} {slot}\n")
        net = _NetResources(
            tag=tag,
            slot=slot,
            jump_ns=JUMP_NS_PREFIX + tag,
            target_ns=TARGET_NS_PREFIX + tag,
            veth=VETH_PREFIX + tag,
        )
    try:
        _configure_network(net)
    except BaseException:
        net.teardown()
        raise
    return net


def _configure_network(net: _NetResources) -> None:
    j, t = net.jump_ns, net.target_ns
    laptop, jump1 = net.host(net.link1, 1), net.host(net.link1, 2)
    jump2, target = net.host(net.link2, 1), net.host(net.link2, 2)
    _assert_unreachable(target)
    _assert_unreachable(jump1)
    for ns in (j, t):
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        # IPv4 only on the test links; nothing is forwarded anywhere
        _sh(netns_argv(ns, "sysctl", "-q", "-w",
                       "net.ipv6.conf.all.disable_ipv6=1",
                       "net.ipv6.conf.default.disable_ipv6=1"))
    _sh(netns_argv(j, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0",
                   "net.ipv4.conf.all.forwarding=0"))
    _sh(netns_argv(t, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0"))

    # laptop (root ns) <-> jump
    _ip("link", "add", net.veth, "type", "veth", "peer", "name", "eth0", "netns", j)
    v6 = Path(f"/proc/sys/net/ipv6/conf/{net.veth}/disable_ipv6")
    if v6.exists():
        v6.write_text("1\n")
    _ip("addr", "add", f"{laptop}/24", "dev", net.veth)
    _ip("link", "set", net.veth, "up")
    _ip("-n", j, "addr", "add", f"{jump1}/24", "dev", "eth0")
    _ip("-n", j, "link", "set", "eth0", "up")

    # jump <-> target (created inside the jump ns: never touches the root ns)
    _ip("-n", j, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", t)
    _ip("-n", j, "addr", "add", f"{jump2}/24", "dev", "eth1")
    _ip("-n", j, "link", "set", "eth1", "up")
    _ip("-n", t, "addr", "add", f"{target}/24", "dev", "eth0")
    _ip("-n", t, "link", "set", "eth0", "up")

    # verify the properties other tests rely on
    _assert_unreachable(target)
    routes_t = _ip("-n", t, "route", "show").stdout
    if "default" in routes_t:
        raise RuntimeError(f"target namespace unexpectedly has a default route:\n{routes_t}")
    if "default" in _ip("-n", j, "route", "show").stdout:
        raise RuntimeError("jump namespace unexpectedly has a default route")


# --------------------------------------------------------------------------
# public entry point


def build_topology(workdir: Path, *, use_netns: bool | None = None) -> Topology:
    """Start jump + target sshds and write ``workdir/ssh_config``.

    ``use_netns``: None = namespaces when possible (required under CI=true),
    False = force the loopback fallback, True = namespaces or raise.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    ci = os.environ.get("CI") == "true"
    allow_fallback = os.environ.get("LABHOP_TEST_ALLOW_LOOPBACK_TOPOLOGY") == "1"
    client_key = make_client_key(workdir)

    reason = ""
    if use_netns is not False:
        ok, why = netns_available()
        if ok:
            try:
                return _build_isolated(workdir, client_key)
            except Exception as exc:
                if use_netns or (ci and not allow_fallback):
                    raise
                reason = f"network-namespace topology failed: {exc}"
        else:
            if use_netns or (ci and not allow_fallback):
                raise RuntimeError(f"cannot build the network-namespace topology: {why}")
            reason = why
    else:
        reason = "loopback topology requested (use_netns=False)"
    return _build_loopback(workdir, client_key, reason)


def _finish(workdir: Path, jump: SshServer, target: SshServer) -> tuple[Path, Path]:
    known_hosts = workdir / "known_hosts"
    cfg = write_ssh_config(workdir / "ssh_config", [jump, target], {"target": ["jump"]},
                           known_hosts=known_hosts)
    jump.ssh_config = target.ssh_config = cfg
    return cfg, known_hosts


def _build_isolated(workdir: Path, client_key: Path) -> Topology:
    tag = secrets.token_hex(3)
    net = _build_network(tag)
    jump = target = None
    topo = None
    try:
        jump = start_sshd(workdir, "jump", address=net.host(net.link1, 2), netns=net.jump_ns,
                          client_key=client_key, port=SSHD_PORT)
        target = start_sshd(workdir, "target", address=net.host(net.link2, 2), netns=net.target_ns,
                            client_key=client_key, port=SSHD_PORT)
        cfg, known_hosts = _finish(workdir, jump, target)
        topo = Topology(
            jump=jump,
            target=target,
            ssh_config=cfg,
            known_hosts=known_hosts,
            isolated=True,
            reason="",
            workdir=workdir,
            jump_netns=net.jump_ns,
            target_netns=net.target_ns,
            laptop_address=net.host(net.link1, 1),
            _net=net,
        )
        atexit.register(topo.close)
        return topo
    except BaseException:
        for server in (target, jump):
            if server is not None:
                server.stop()
        net.teardown()
        raise


def _build_loopback(workdir: Path, client_key: Path, reason: str) -> Topology:
    jump = start_sshd(workdir, "jump", client_key=client_key)
    try:
        target = start_sshd(workdir, "target", client_key=client_key)
    except BaseException:
        jump.stop()
        raise
    cfg, known_hosts = _finish(workdir, jump, target)
    topo = Topology(
        jump=jump,
        target=target,
        ssh_config=cfg,
        known_hosts=known_hosts,
        isolated=False,
        reason=f"weaker isolation, target reachable directly on 127.0.0.1: {reason}",
        workdir=workdir,
        laptop_address="127.0.0.1",
    )
    atexit.register(topo.close)
    return topo
