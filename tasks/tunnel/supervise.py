"""Keep a background tunnel's ssh running: start it again, with backoff, whenever it exits.

``fab tunnel --background`` starts this program (not ssh itself) in its own session; the
tunnel's record names this process, so ``fab tunnel --close`` ends it (SIGTERM: it ends
ssh, then exits).

- The first ssh must come up (its local forward listens; with only a reverse forward: it
  is still running after a few seconds; or fab, having checked the tunnel end to end, says
  so with SIGUSR1). If it exits before that, so does this program, with ssh's exit code,
  and fab explains the failure from the log as it would without it. fab returns only once
  this program has reported the tunnel up: a drop right after that is restarted too.
- After that, whenever ssh exits (a jump host's sshd restarted, a host rebooted, the network
  dropped: ssh's ServerAliveInterval notices a silent drop) it is started again after 1, 2,
  4 ... 30 s; the delay starts over once a connection has lasted a minute.
- A state file beside the tunnel's record says what it is doing, for ``fab status``.

Standalone: stdlib only, run as ``python supervise.py SPEC_JSON`` (no package on sys.path
needed; it imports its sibling local.py as a top-level module); the pure parts (``backoff``,
``describe``, ``read_state``) are imported by tasks/tunnel/records.py and opener.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Optional

if __package__:
    from .local import port_is_free, socket_listens, write_private_json
else:  # a bare script: its own folder is first on sys.path
    from local import port_is_free, socket_listens, write_private_json  # type: ignore[import-not-found,no-redef]

BASE_DELAY = 1.0
MAX_DELAY = 30.0
STABLE_AFTER = 60.0  # a connection that lasted this long resets the backoff
UP_WITHOUT_PORT = 3.0  # reverse forward only: alive this long counts as up
LOGIN_NEEDED = 77  # tasks/tunnel/hold.py: the target's master is gone and its host wants a person


def backoff(attempt: int) -> float:
    """Seconds to wait before reconnect ``attempt`` (1, 2, 3 ...)."""
    return min(MAX_DELAY, BASE_DELAY * 2.0 ** max(0, attempt - 1))


def describe(state: Optional[dict[str, Any]], now: Optional[float] = None) -> str:
    """What ``fab status`` adds to a supervised tunnel's line."""
    if not state:
        return ""
    now = time.time() if now is None else now
    restarts = state.get("restarts", 0)
    if state.get("state") == "login needed":
        return (f"; login needed: the SSH login ended {_ago(now, state.get('since'))} and a hop asks for more "
                f"than a key; `fab -H HOST login` and the tunnel comes back by itself")
    if state.get("state") == "reconnecting":
        wait = max(0, int(round((state.get("next_attempt") or now) - now)))
        return (f"; reconnecting: ssh exited ({state.get('last_exit')}) {_ago(now, state.get('since'))}, "
                f"attempt {state.get('attempt')} in {wait}s")
    if restarts:
        times = "time" if restarts == 1 else "times"
        return f"; reconnected {restarts} {times} by itself, last {_ago(now, state.get('since'))}"
    return ""


def _ago(now: float, then: Optional[float]) -> str:
    return f"{max(0, int(now - then))}s ago" if isinstance(then, (int, float)) else "a moment ago"


def read_state(path: str) -> Optional[dict[str, Any]]:
    try:
        with open(path) as f:
            state = json.load(f)
        return state if isinstance(state, dict) else None
    except (OSError, ValueError):
        return None


def _write_state(path: str, **state: Any) -> None:
    write_private_json(path, {**state, "supervisor": os.getpid()})


def _listening(bind: str, port: int) -> bool:
    """Does something (our ssh) listen on bind:port?"""
    return not port_is_free(bind, port)


class _Supervisor:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.argv: list[str] = spec["argv"]
        self.state_path: str = spec["state"]
        self.bind: str = spec.get("bind") or "127.0.0.1"
        self.port: Optional[int] = spec.get("port")
        self.login: Optional[str] = spec.get("login")  # the target master's socket (tasks/tunnel/hold.py)
        self.child: Optional[subprocess.Popen[bytes]] = None
        self.stopping = False
        self.reconnects = 0  # times ssh came up again after the first
        self.confirmed = False  # fab checked the first ssh's tunnel end to end (SIGUSR1)

    def confirm(self, signum: int, frame: Any) -> None:
        self.confirmed = True

    def stop(self, signum: int, frame: Any) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()

    def stop_requested(self) -> bool:
        # A call, not the attribute: a signal handler sets it between any two lines.
        return self.stopping

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.stop)
        signal.signal(signal.SIGUSR1, self.confirm)
        attempt = 0
        ever_up = False
        while not self.stopping:
            # stdin/stdout: /dev/null; stderr: inherited, the tunnel's log.
            self.child = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            started = time.time()
            up = False
            while self.child.poll() is None and not self.stopping:
                if not up and ((self.confirmed and not ever_up) or
                               (_listening(self.bind, self.port) if self.port else
                                time.time() - started >= UP_WITHOUT_PORT)):
                    self.reconnects += 1 if ever_up else 0
                    up = ever_up = True
                    _write_state(self.state_path, state="up", pid=self.child.pid, restarts=self.reconnects,
                                 since=time.time(), last_exit=None, attempt=0, next_attempt=None)
                time.sleep(0.05 if not ever_up else 0.2)
            if self.stop_requested():
                break
            code = self.child.wait()
            if self.confirmed and not ever_up:  # fab saw it work, then it dropped before our next look
                up = ever_up = True
            if not ever_up:
                return code if code > 0 else 1  # it never worked: fab reports why (the log)
            if code == LOGIN_NEEDED and self.login:
                # No retries against a host that asks for a second factor: wait for `fab login`.
                _write_state(self.state_path, state="login needed", pid=None, restarts=self.reconnects,
                             since=time.time(), last_exit=code, attempt=0, next_attempt=None)
                while not self.stopping and not socket_listens(self.login):
                    time.sleep(1.0)
                attempt = 0
                continue
            attempt = 1 if up and time.time() - started >= STABLE_AFTER else attempt + 1
            delay = backoff(attempt)
            sys.stderr.write(f"labhop: ssh exited ({code}); starting it again in {delay:.0f}s "
                             f"(attempt {attempt})\n")
            sys.stderr.flush()
            _write_state(self.state_path, state="reconnecting", pid=None, restarts=self.reconnects,
                         since=time.time(), last_exit=code, attempt=attempt, next_attempt=time.time() + delay)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not self.stopping:
                time.sleep(0.1)
        if self.child is not None:
            try:
                self.child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()
        try:
            os.unlink(self.state_path)
        except OSError:
            pass
        return 0


def command(spec: dict[str, Any], python: str = sys.executable) -> list[str]:
    """The argv that runs this file as the supervisor of ``spec`` (argv, state, bind, port)."""
    return [python, os.path.abspath(__file__), json.dumps(spec)]


if __name__ == "__main__":
    sys.exit(_Supervisor(json.loads(sys.argv[1])).run())
