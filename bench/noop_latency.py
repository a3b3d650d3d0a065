"""No-op re-provision vs `ssh target true` when the link from this machine to the jump host has latency.

The suite's topology has next to none (namespaces on one machine), so there a no-op's fixed
costs on this machine (starting Python, importing Fabric: see noop_provision.py's floor)
weigh against an `ssh` that is unusually fast. A laptop reaching a university login node
over the internet sees 10-50 ms of round trip. The kernel's netem is not available
everywhere (it is not here), so a relay on this machine delays each direction by half the
round trip, and both sides go through it: the same ssh_config with the jump host behind the
relay, its host key known under the relay's address. The jump -> target link is unchanged
(a cluster's own network).
"""
from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    from bench.hosts import BenchHosts, Figure, side_by_side, main
except ImportError:  # run as a script: python bench/noop_latency.py
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from bench.hosts import BenchHosts, Figure, side_by_side, main

RTT_MS = 20


def run(hosts: BenchHosts, runs: int) -> tuple[list[Figure], list[str]]:
    jump = hosts.topo.jump
    with delaying_relay(jump.address, jump.port, RTT_MS / 2000) as port:
        far = dataclasses.replace(hosts, ssh_config=behind_relay(hosts, port))
        subject, baseline = side_by_side(runs, far.noop_provision, far.ssh_true)
    figure = Figure(f"no-op re-provision vs `ssh target true`, {RTT_MS} ms round trip to the jump host",
                    "fab -H target provision (no-op)", "ssh target true", subject, baseline)
    return [figure], [f"with {RTT_MS} ms between this machine and the jump host (a relay delaying each direction "
                      f"{RTT_MS / 2:g} ms), a no-op provision costs "
                      f"{figure.subject_median - figure.baseline_median:.2f}s "
                      f"more than `ssh target true` ({figure.ratio:.2f}x): labhop's start-up on this machine stays, "
                      f"its SSH work grows no faster than ssh's"]


def behind_relay(hosts: BenchHosts, port: int) -> Path:
    """A copy of the ssh_config whose jump host is the relay, and known_hosts to match."""
    jump = hosts.topo.jump
    text = hosts.ssh_config.read_text()
    known = Path(re.search(r"UserKnownHostsFile (\S+)", text).group(1))  # type: ignore[union-attr]
    name = f"[{jump.address}]:{jump.port}" if jump.port != 22 else jump.address
    key = next(line.split(None, 1)[1] for line in known.read_text().splitlines() if line.split(None, 1)[0] == name)
    relayed = hosts.workdir / "known_hosts_relay"
    relayed.write_text(known.read_text() + f"[127.0.0.1]:{port} {key}\n")
    block = re.compile(r"(Host jump\n(?:    .*\n)+)")
    jump_block = block.search(text).group(1)  # type: ignore[union-attr]
    new_block = (jump_block.replace(f"HostName {jump.address}", "HostName 127.0.0.1")
                 .replace(f"Port {jump.port}", f"Port {port}"))
    config = hosts.workdir / "ssh_config_relay"
    config.write_text(text.replace(jump_block, new_block).replace(str(known), str(relayed)))
    return config


@contextmanager
def delaying_relay(host: str, port: int, one_way: float) -> Iterator[int]:
    """A TCP relay on 127.0.0.1 to host:port that holds every chunk ``one_way`` seconds, each
    direction, in order. Yields its port."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    listening: dict[str, object] = {}

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def feed() -> None:
            while data := await reader.read(1 << 16):
                queue.put_nowait((loop.time() + one_way, data))
            queue.put_nowait((loop.time() + one_way, b""))

        feeder = asyncio.ensure_future(feed())
        try:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    writer.write_eof()
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            feeder.cancel()

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        writers = [client_w]
        try:
            server_r, server_w = await asyncio.open_connection(host, port)
            writers.append(server_w)
            await asyncio.gather(pump(client_r, server_w), pump(server_r, client_w))
        except (OSError, asyncio.CancelledError):  # a refused jump host; the relay closing
            pass
        finally:
            for w in writers:
                w.close()

    async def start() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        listening["server"] = server
        listening["port"] = server.sockets[0].getsockname()[1]
        ready.set()

    async def stop() -> None:
        listening["server"].close()  # type: ignore[attr-defined]
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield int(listening["port"])  # type: ignore[arg-type]
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


if __name__ == "__main__":
    main(run)
