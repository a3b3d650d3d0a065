"""Installing on a target that reaches its package index: with uv brought over SSH.

Pure. uv installs JupyterLab several times faster than pip, but a uv installed by pip on the
target came from the index at pip's speed, trusts only its own built-in roots (behind a
TLS-terminating proxy: "invalid peer certificate: UnknownIssuer") and reads none of pip's
configuration. So, as the offline path does (tasks/offline/install.py), the controller's cached uv
wheel for the target's signature (tasks/offline/wheelcache.py) travels over the run's SSH
connection and is unpacked to ``<prefix>/bin/uv``; tasks/remote/uv_install.py then runs it on the
target with the target's pip settings (index-url, extra-index-url, find-links, cert, ...) handed
over as uv's own variables, and with the system trust store. Those settings are read on the
target at install time and never leave it: an index URL may carry a password.

pip installs only when uv cannot run there (a prefix mounted noexec, a binary the host refuses);
the install step's line says which one did (the last line it prints, see steps.Command.note).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

from .. import shell
from ..remote import source
from ..target.layout import Layout
from ..target.probe import HostFacts
from ..steps import Command, Step
from .install import plan_push, venv_command
from .wheelhouse import Manifest



def uv_runs(uv: str) -> str:
    """A shell test: ``uv`` runs on this host."""
    return f"{shell.q(uv)} --version >/dev/null 2>&1"


def plan_uv(facts: HostFacts, layout: Layout, manifest: Optional[Manifest]) -> tuple[list[Step], Optional[str], str]:
    """Bring uv for an online install: (steps, the uv the install will try, where it came from).

    labhop's own copy when an earlier run unpacked it; else the controller's uv wheel, pushed
    and unpacked (as offline); else the target's own uv on PATH; else none (pip).
    """
    own = layout.own_uv
    if facts.uv == own:
        return [], own, "brought over SSH"
    if manifest is not None and (manifest.uv_wheel or manifest.pending):
        # plan_push unpacks uv only where the probe found none: here the target's PATH does not count.
        steps = [tolerant_unpack(step, own) for step in plan_push(replace(facts, uv=None), layout, manifest)]
        return steps, own, "brought over SSH"
    if facts.uv:
        return [], facts.uv, f"{facts.uv}, found on the target"
    return [], None, ""


def tolerant_unpack(step: Step, own: str) -> Step:
    """Online, a uv that cannot run here is no failure: pip installs instead, and the line says why."""
    if not (isinstance(step, Command) and step.description.startswith("unpack uv")):
        return step
    last_line = "$(printf '%s' \"$err\" | tail -n 1)"
    command = (f"if err=$({step.command} 2>&1 >/dev/null); then echo '(it runs here)'; "
               f"else rm -f {shell.q(own + '.tmp')}; "
               f"printf '(it does not run here, pip installs instead: %s)\\n' \"{last_line}\"; fi")
    return replace(step, command=command, note=True)


def online_venv_command(uv: Optional[str], python: str, venv: str) -> str:
    """uv's venv (no ensurepip: seconds faster) when uv runs here, else Python's own."""
    plain = shell.join([python, "-m", "venv", "--clear", venv])
    if uv is None:
        return plain
    return f"if {uv_runs(uv)}; then {venv_command(uv, python, venv)} && echo '(uv)'; else {plain} && echo '(venv)'; fi"


def online_install_command(python: str, uv: Optional[str], how: str, venv_python: str, requirements: list[str]) -> str:
    return shell.join([python, "-c", source("uv_install.py"), uv or "", how, venv_python, *requirements])
