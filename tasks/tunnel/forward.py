"""``fab tunnel`` and ``fab rmate`` on this machine: the flags, then open, close or report forwards.

The parts, each in its own module of this package: ``records`` (the pidfiles in the state dir),
``process`` (is a recorded process still ours, ending it), ``endpoint`` (the JupyterLab at the
far end and the HTTP check through the forward), ``opener`` (starting, verifying and holding a
forward), ``supervise`` (keeping a background one up), ``rmate`` (the target's rmate port).
"""
from __future__ import annotations

import ipaddress
import threading
from typing import Any, Optional

from ..errors import UsageError
from ..ssh.connect import ssh_chain
from ..target.probe import HostFacts
from . import rmate as rmate_mod
from .endpoint import JupyterEnd, jupyter_end
from .opener import Opener, Request
from .records import RMATE, TUNNEL, close_records, status_data, status_lines
from ..invocation import PROGRAM

# What the tasks use from here (tasks/actions.py, tasks/slurm/run.py).
__all__ = ["RMATE", "TUNNEL", "JupyterEnd", "close_forwards", "open_forwards", "parse_bind", "request_from_flags",
           "status_data", "status_lines"]


def parse_bind(value: Optional[str]) -> str:
    if value in (None, ""):
        return "127.0.0.1"
    if value in ("*", "localhost"):
        return "0.0.0.0" if value == "*" else "127.0.0.1"
    try:
        return str(ipaddress.ip_address(str(value).strip("[]")))
    except ValueError:
        raise UsageError(f"--bind: {value!r} is not an IP address (e.g. 127.0.0.1, 0.0.0.0, 192.168.1.5)") from None


def request_from_flags(*, jupyter: bool, rmate: bool, local_port: Optional[object] = None,
                       bind: Optional[str] = None, editor_port: Optional[object] = None,
                       background: bool = False, close: bool = False) -> Request:
    """Validate the flags before anything connects."""
    from ..settings import parse_port

    if close and (background or local_port is not None or bind is not None):
        raise UsageError("--close takes no other flag: it ends the forwards this machine holds open to the host")
    return Request(jupyter=jupyter, rmate=rmate, background=background, bind=parse_bind(bind),
                   local_port=parse_port(local_port, "--local-port") if local_port is not None else None,
                   editor_port=parse_port(editor_port, "--editor-port") if editor_port is not None
                   else rmate_mod.DEFAULT_PORT)


def _require_remote(session: Any, what: str) -> None:
    if session.target.is_local:
        raise UsageError(f"{what} reaches a remote host: use `{PROGRAM} -H NAME {what}`")


def open_forwards(session: Any, request: Request, facts: Optional[HostFacts],
                  end: Optional[JupyterEnd] = None) -> None:
    """``fab tunnel`` / ``fab rmate``: open (or find open), verify, report; hold in the foreground.
    ``end``: forward there instead of to the target's own server (a Slurm job's node, as the target reaches it)."""
    kind = TUNNEL if request.jupyter else RMATE
    _require_remote(session, kind)
    if not request.background and threading.current_thread() is not threading.main_thread():
        # Several hosts at once (tasks.fleet runs them in threads): only detached tunnels make sense.
        raise UsageError(f"a foreground {kind} holds the terminal for one host: with several hosts, "
                         f"add --background (and `{kind} --close` later)")
    if end is None:
        end = jupyter_end(facts, session.target.name) if request.jupyter and facts is not None else None
    Opener(session, ssh_chain(session.target), request, end).open()


def close_forwards(session: Any, kind: str) -> None:
    _require_remote(session, kind)
    close_records(session.target.name, (kind,), session.report.say)
