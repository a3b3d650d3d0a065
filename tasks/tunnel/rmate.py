"""rmate through the reverse tunnel: which port on the target, and the ~/.rmate.rc that points at it.

Pure. ``rmate FILE`` on the target connects to localhost:52698 unless ``~/.rmate.rc``
(``port: N``, read by both the Python and the Ruby rmate) or ``RMATE_PORT`` say
otherwise. 52698 is taken as soon as a second user on a shared login node does the
same, so labhop falls back to a free port and records it in ``~/.rmate.rc`` -- but
only in a file it wrote itself (marked by ``RC_MARKER``), never in the user's own.
The checks on the target are tasks/remote/rmate_ports.py and rmate_listening.py.
"""
from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Optional

from ..errors import LabhopError
from ..plan import Plan
from ..steps import Skip, WriteFile

DEFAULT_PORT = 52698  # rmate's and the editors' (rsub, RemoteSubl, Remote VSCode) default
RC_MARKER = "# written by labhop"


@dataclass(frozen=True)
class TargetPorts:
    wanted_free: bool
    spare: Optional[int]
    rc: Optional[str]
    rc_path: str
    slurm: Optional[tuple[str, str]] = None  # (job, node) of a labhop Slurm job serving from this login node


def parse_ports(stdout: str) -> TargetPorts:
    try:
        data = json.loads(stdout.strip().splitlines()[-1])
        job = data.get("slurm")
        slurm = (str(job["job"]), str(job["node"])) if isinstance(job, dict) else None
        return TargetPorts(bool(data["wanted_free"]), data.get("spare"), data.get("rc"), str(data["rc_path"]),
                           slurm)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise LabhopError(f"could not read the port check from the target ({exc})") from None


def slurm_note(ports: TargetPorts, host: str) -> Optional[str]:
    """One line when JupyterLab runs in a Slurm job: rmate's forward ends on the login node, not the job's node."""
    if ports.slurm is None:
        return None
    job, node = ports.slurm
    return (f"JupyterLab runs in Slurm job {job} on {node}; rmate forwards to the login node {host}, where the "
            f"files are the same (the shared home): run `rmate FILE` in a shell on {host}, not in a JupyterLab "
            f"terminal (that runs on {node})")


def choose_remote_port(ports: TargetPorts, wanted: int = DEFAULT_PORT) -> int:
    """The wanted port when free, else the free one the target found."""
    if ports.wanted_free:
        return wanted
    if not ports.spare:
        raise LabhopError(f"port {wanted} is taken on the target and no free port was found there")
    return int(ports.spare)


def rc_port(text: Optional[str]) -> Optional[int]:
    """The port an rc file sets (``port: N`` or ``port = N``), if any."""
    for line in (text or "").splitlines():
        m = re.match(r"\s*port\s*[:=]\s*(\d+)\s*$", line)
        if m:
            return int(m.group(1))
    return None


def is_labhops(text: Optional[str]) -> bool:
    return text is not None and any(line.startswith(RC_MARKER) for line in text.splitlines())


def render_rc(port: int) -> str:
    return (f"{RC_MARKER} (fab rmate): rmate reaches your editor through the reverse tunnel on this port.\n"
            f"# labhop rewrites this file; delete the first line to make it yours.\n"
            f"port: {port}\n")


def plan_rc(ports: TargetPorts, port: int) -> Plan:
    """Make ``rmate`` on the target find ``port`` (from a login shell, without flags)."""
    plan = Plan()
    name = "~/.rmate.rc"
    current = ports.rc
    if current is None:
        if port == DEFAULT_PORT:
            plan.steps.append(Skip(name, f"not needed: rmate's default port {DEFAULT_PORT} is the forwarded one"))
        else:
            plan.steps.append(WriteFile(f"write {name} (port {port})", ports.rc_path, render_rc(port), 0o600))
        return plan
    if is_labhops(current):
        if current == render_rc(port):
            plan.steps.append(Skip(name, f"already says port {port}"))
        else:
            plan.steps.append(WriteFile(f"write {name} (port {port}, was {rc_port(current)})",
                                        ports.rc_path, render_rc(port), 0o600))
        return plan
    theirs = rc_port(current)
    effective = theirs if theirs is not None else DEFAULT_PORT
    if effective == port:
        plan.steps.append(Skip(name, f"yours, and it already leads to port {port}"))
        return plan
    plan.steps.append(Skip(name, "left alone: not written by labhop"))
    plan.warnings.append(f"{posixpath.basename(ports.rc_path)} on the target is yours and makes rmate use port "
                         f"{effective}, but the tunnel listens on {port}: run `rmate -p {port} FILE` there, "
                         f"or set `port: {port}` in ~/.rmate.rc")
    return plan
