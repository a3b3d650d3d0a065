"""Bytes per second through `fab tunnel --background` against a raw `ssh -L`, same two-hop path, same run.

    python bench/tunnel_throughput.py [--mb 256] [--runs 9] [--paramiko]

Builds the test harness's laptop -> jump -> target topology (network namespaces when
root), provisions and serves JupyterLab on the target through the jump host, opens
`fab tunnel --background` (which checks the URL with the token), then swaps the server
for a raw byte source on the same port, so that what is measured is the tunnel and
not Jupyter's file handler.

Baselines are the user's own commands with ProxyJump from the same ssh_config file:
`ssh -f -N -L` (seed 002's background tunnel; the goal ratio is against it, like for
like), a second copy of it as a noise gauge, and `ssh -N -L` in the foreground of the
benchmark's own session. Under load the last one moves ~20% more than any detached
tunnel, ours or `ssh -f`: the kernel's autogroup scheduler groups it with the reader.
Transfers rotate between the paths so load drifts hit all alike; ratios are paired per
round, then the median is taken. `--paramiko` adds the fallback used without `ssh`.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from labhop.tunnel.local import port_is_free  # noqa: E402
from tests.harness.sshd import free_port  # noqa: E402
from tests.harness.topology import build_topology  # noqa: E402

FAB = str(Path(sys.executable).with_name("fab"))
GOAL = 0.9  # fab tunnel / raw ssh -L

SOURCE = r'''
import socket, sys, threading
size = int(sys.argv[2])
block = b"\0" * (1 << 20)
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(16)
print("ready", flush=True)
def send(conn):
    with conn:
        left = size
        while left > 0:
            n = conn.send(block[:min(left, len(block))]); left -= n
while True:
    conn, _ = srv.accept()
    threading.Thread(target=send, args=(conn,), daemon=True).start()
'''


def receive(port: int, expected: int, timeout: float = 300) -> float:
    """Seconds to read ``expected`` bytes from 127.0.0.1:port until EOF."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    got = 0
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        while True:
            n = s.recv_into(view)
            if not n:
                break
            got += n
    elapsed = time.perf_counter() - started
    if got != expected:
        raise RuntimeError(f"received {got} bytes through port {port}, expected {expected}")
    return elapsed


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and its descendants (the ssh and its ProxyCommand ssh)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
            fields = stat[stat.rfind(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def find_pid(argv_tail: list[str]) -> int:
    """The daemon `ssh -f` left behind: the process whose argv ends like ours (ours alone has this port)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if [a.decode(errors="replace") for a in argv[-len(argv_tail):]] == argv_tail and argv[0] == b"ssh":
            return int(entry.name)
    raise RuntimeError("the ssh -f process was not found")


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Until ssh listens (a bind test: a connection would start a transfer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"forward process exited {proc.returncode}")
        if not port_is_free("127.0.0.1", port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256, help="megabytes per transfer (default 256)")
    ap.add_argument("--runs", type=int, default=5, help="transfers per path (default 5)")
    ap.add_argument("--paramiko", action="store_true", help="also measure the paramiko fallback (slow: 1/4 size)")
    args = ap.parse_args()
    size = args.mb << 20

    work = Path(tempfile.mkdtemp(prefix="labhop-bench-tunnel-"))
    topo = build_topology(work / "topology")
    procs: list[subprocess.Popen] = []
    daemons: list[int] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABHOP_")}
    env.update(LABHOP_INVENTORY=str(work / "inventory.toml"), XDG_STATE_HOME=str(work / "state"))
    port = free_port()
    (work / "inventory.toml").write_text(
        f'[hosts.internal]\nhostname = "target"\njump = ["jump"]\nport = {port}\n'
        f'prefix = "{topo.target.home}/.labhop-bench"\n')

    def fab(*argv: str, timeout: float = 900, extra_env: dict | None = None) -> str:
        proc = subprocess.run([FAB, "-r", str(REPO), "-S", str(topo.ssh_config), "-H", "internal", *argv],
                              cwd=work, env={**env, **(extra_env or {})}, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"fab {' '.join(argv)}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    try:
        print(f"topology: {'network namespaces' if topo.isolated else 'loopback (weaker isolation)'}; "
              f"laptop -> jump {topo.jump.address} -> target {topo.target.address}", flush=True)
        t0 = time.monotonic()
        fab("serve")
        print(f"provisioned and served JupyterLab on the target through the jump in {time.monotonic() - t0:.0f}s")
        fab_port = free_port()
        fab("tunnel", "--background", "--local-port", str(fab_port), timeout=120)  # verified with the token
        (record,) = [json.loads(p.read_text()) for p in (work / "state" / "labhop").glob("tunnel-*.json")]
        fab("stop")
        source = subprocess.Popen(topo.target_exec_argv(sys.executable, "-c", SOURCE, str(port), str(size)),
                                  stdout=subprocess.PIPE, text=True)
        procs.append(source)
        assert source.stdout.readline().strip() == "ready"

        # Baselines, on the same two hops (ProxyJump from the same ssh_config file):
        #  - `ssh -f -N -L`, seed 002's background tunnel: detached from this session like ours;
        #    twice, the second copy ("control") showing how much identical paths differ here;
        #  - `ssh -N -L` in the foreground of this very session. With the kernel's autogroup
        #    scheduler, a process that shares the reader's session is scheduled with it and
        #    moves more under load than one in a session of its own (any detached tunnel).
        fab_name, bg, bg2, fg = ("fab tunnel --background", "ssh -f -N -L (seed 002)", "ssh -f -N -L (control)",
                                 "ssh -N -L (same session)")
        paths = {fab_name: fab_port}
        pids = {fab_name: record["pid"]}
        for name in (bg, bg2, fg):
            raw_port = free_port()
            argv = ["ssh", "-F", str(topo.ssh_config), "-N", "-n", "-o", "ExitOnForwardFailure=yes",
                    "-L", f"{raw_port}:127.0.0.1:{port}", "target"]
            if name == fg:
                raw = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
                procs.append(raw)
                wait_listening(raw_port, raw)
                pids[name] = raw.pid
            else:
                subprocess.run(argv[:1] + ["-f"] + argv[1:], stdin=subprocess.DEVNULL, check=True, timeout=60)
                pids[name] = find_pid(argv[1:])
                daemons.append(pids[name])
            paths[name] = raw_port

        names = list(paths)
        for name in names:  # warm-up
            receive(paths[name], size)
        times: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for i in range(args.runs):
            order = names[i % len(names):] + names[:i % len(names)]  # rotate: load drifts hit all alike
            for name in order:
                before = cpu_seconds(pids[name])
                times[name].append(receive(paths[name], size))
                cpu[name].append(cpu_seconds(pids[name]) - before)
        rate = {name: size / statistics.median(t) for name, t in times.items()}
        for name, t in times.items():
            # CPU of the client ssh and its jump-host ssh; an `ssh -f` daemon's proxy is not its child.
            used = "n/a" if name in (bg, bg2) else f"{statistics.median(cpu[name]) / (size / 1e9):.2f} s/GB"
            print(f"  {name:26s} {rate[name] / 1e6:8.1f} MB/s  (median of {len(t)} x {args.mb} MB; "
                  f"{', '.join(f'{size / x / 1e6:.0f}' for x in t)}); client ssh CPU {used}")

        def paired(a: str, b: str) -> float:
            """rate(a) / rate(b), per round (same minute, same load), median over rounds."""
            return statistics.median(tb / ta for ta, tb in zip(times[a], times[b]))

        ratio = paired(fab_name, bg)
        verdict = "met" if ratio >= GOAL else "NOT met"
        print(f"tunnel throughput: {ratio:.2f}x `ssh -f -N -L` (goal >= {GOAL}x: {verdict}); "
              f"noise: identical ssh -f paths {paired(bg2, bg):.2f}x; "
              f"vs ssh -N -L in the reader's session {paired(fab_name, fg):.2f}x "
              f"(ssh -f there: {paired(bg, fg):.2f}x)")

        if args.paramiko:
            small = max(size // 4, 1 << 20)
            source.kill()
            source.wait()
            fab("tunnel", "--close")
            fab("serve")  # the fallback checks the URL first; the source takes the port afterwards
            empty = work / "no-ssh-bin"
            empty.mkdir(exist_ok=True)
            pm_port = free_port()
            pm = subprocess.Popen([FAB, "-r", str(REPO), "-S", str(topo.ssh_config), "-H", "internal", "tunnel",
                                   "--local-port", str(pm_port)], cwd=work, env={**env, "PATH": str(empty)},
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append(pm)
            for line in pm.stdout:
                if "Ctrl-C closes it" in line:
                    break
            fab("stop")
            source = subprocess.Popen(topo.target_exec_argv(sys.executable, "-c", SOURCE, str(port), str(small)),
                                      stdout=subprocess.PIPE, text=True)
            procs.append(source)
            assert source.stdout.readline().strip() == "ready"
            pm_times = [receive(pm_port, small) for _ in range(max(2, args.runs // 2))]
            pm_rate = small / statistics.median(pm_times)
            print(f"  {'paramiko fallback':26s} {pm_rate / 1e6:8.1f} MB/s  (median of {len(pm_times)} x "
                  f"{small >> 20} MB): {pm_rate / rate[bg]:.2f}x ssh -f -N -L")
            pm.send_signal(signal.SIGTERM)
            pm.wait(timeout=30)
        return 0
    finally:
        for pid in daemons:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        subprocess.run([FAB, "-r", str(REPO), "-S", str(topo.ssh_config), "-H", "internal", "tunnel", "--close"],
                       cwd=work, env=env, capture_output=True, timeout=60)
        topo.close()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    sys.exit(main())
