"""A throwaway ``ssh-agent`` for tests: keys that exist only in the agent.

``start_agent(dir)`` runs ``ssh-agent -D -a <dir>/agent.sock`` (in the foreground, as a child
of the test, so ``stop()`` ends exactly that process); ``add(key)`` loads a key with
``ssh-add``; ``env()`` is ``SSH_AUTH_SOCK`` for a client that finds its agent that way (the
socket path also goes into ssh_config's ``IdentityAgent``).
"""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .sshd import end_process

__all__ = ["Agent", "start_agent"]


@dataclass
class Agent:
    socket: Path
    _proc: subprocess.Popen = field(repr=False)

    def env(self) -> dict[str, str]:
        return {"SSH_AUTH_SOCK": str(self.socket)}

    def add(self, key: Path) -> None:
        subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, **self.env()}, check=True,
                       capture_output=True, text=True, timeout=30)

    def listed(self) -> list[str]:
        """``ssh-add -L``: the public keys the agent holds."""
        out = subprocess.run(["ssh-add", "-L"], env={**os.environ, **self.env()}, capture_output=True, text=True,
                             timeout=30)
        return [line for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []

    def stop(self) -> None:
        end_process(self._proc)
        self.socket.unlink(missing_ok=True)


def start_agent(directory: Path) -> Agent:
    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / "agent.sock"
    sock.unlink(missing_ok=True)
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    agent = Agent(sock, proc)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            agent.stop()
            raise RuntimeError(f"ssh-agent did not create {sock}")
        time.sleep(0.02)
    return agent
