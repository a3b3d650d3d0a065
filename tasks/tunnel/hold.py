"""Hold a tunnel's forwards in the target's OpenSSH master (tasks/ssh/master.py) for as long as it runs.

The forwards live in the master (``ssh -O forward``), so they cost no login of their own: a
2FA host is not asked again when a tunnel is closed and opened. This process stands for them
where the tunnel code expects the tunnel's ``ssh`` (its record's pid, the supervisor's child):

- start: every hop's master that is not live is started again without a prompt (a key-only
  hop reconnects as before); a hop that needs a person ends this process with
  ``LOGIN_NEEDED`` and one line saying so, and nothing is retried against that server;
- then the forwards are added (``-O forward``; a busy port or a refused remote port ends it
  with ssh's words on stderr, in the form tasks/ssh/openssh.explain_failure reads);
- then it waits; when the target's master goes away (network cut, suspend, ``logout``) it
  exits 255 as ssh would; on SIGTERM/SIGINT/SIGHUP it removes the forwards (``-O cancel``)
  and exits 0.

Standalone: stdlib only, run as ``python hold.py SPEC_JSON``.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from typing import Any

if __package__:
    from .local import socket_listens
else:  # a bare script: its own folder is first on sys.path
    from local import socket_listens  # type: ignore[import-not-found,no-redef]

LOGIN_NEEDED = 77  # the supervisor waits for a login instead of retrying (tasks/tunnel/supervise.py)
POLL = 0.5


def needs_person(stderr: str) -> bool:
    methods = re.search(r"Permission denied \(([^)]*)\)", stderr)
    return methods is not None and bool({"keyboard-interactive", "password"} & set(methods.group(1).split(",")))


class _Holder:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.hops: list[dict[str, Any]] = spec["hops"]  # {"name", "path", "start": argv} outermost first
        self.client: list[str] = spec["client"]  # the target master's client argv, without the host
        self.alias: str = spec["alias"]
        self.forwards: list[str] = spec["forwards"]  # ["-L", "spec", "-R", "spec", ...]
        self.stopping = False

    def stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def mux(self, *options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.client, *options, self.alias], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=30, check=False)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.stop)
        for hop in self.hops:
            if socket_listens(hop["path"]):
                continue
            if not hop["start"]:  # the user's own master: theirs to start again
                sys.stderr.write(f"labhop: your ControlMaster for {hop['name']} is not running\n")
                return 255
            started = subprocess.run(hop["start"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, timeout=120, check=False)
            if started.returncode != 0 or not socket_listens(hop["path"]):
                if needs_person(started.stderr):
                    sys.stderr.write(f"labhop: login needed: {hop['name']} asks for more than a key; "
                                     f"`fab -H {self.alias} login` on a terminal\n")
                    return LOGIN_NEEDED
                sys.stderr.write(started.stderr)
                return 255
        added = self.mux("-O", "forward", *self.forwards)
        if added.returncode != 0:
            sys.stderr.write(_as_ssh_says(added.stderr, self.forwards))
            return 255
        while not self.stopping:
            if not socket_listens(self.hops[-1]["path"]):
                sys.stderr.write(f"labhop: the login to {self.hops[-1]['name']} ended (its master is gone)\n")
                return 255
            time.sleep(POLL)
        self.mux("-O", "cancel", *self.forwards)
        return 0


def _as_ssh_says(stderr: str, forwards: list[str]) -> str:
    """A refused ``-O forward``, in the words a plain ``ssh -L``/``-R`` would have logged."""
    text = stderr.strip() or "forwarding request failed"
    pairs = list(zip(forwards[::2], forwards[1::2]))
    for flag, value in pairs:
        if flag == "-L":  # BIND:PORT:HOST:HOSTPORT, BIND maybe [v6]
            bind, rest = value[1:].split("]:", 1) if value.startswith("[") else value.split(":", 1)
            return f"bind [{bind}]:{rest.split(':', 1)[0]}: Address already in use ({text})\n"
    for _flag, value in pairs:
        return f"Warning: remote port forwarding failed for listen port {value.split(':', 1)[0]} ({text})\n"
    return text + "\n"


def command(spec: dict[str, Any], python: str = sys.executable) -> list[str]:
    import os

    return [python, os.path.abspath(__file__), json.dumps(spec)]


if __name__ == "__main__":
    sys.exit(_Holder(json.loads(sys.argv[1])).run())
