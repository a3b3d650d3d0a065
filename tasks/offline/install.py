"""Installing on a target that cannot reach a package index: the steps, from a wheelhouse.

Pure. When the probe finds the index unreachable (or the user says ``--offline`` /
``offline = true``), provision pushes the controller's wheelhouse (tasks/offline/wheelhouse.py)
to ``<prefix>/wheelhouse``: only the wheels not already there, as one bundle a cut
connection resumes; the target splits it and keeps each wheel whose sha256 matches.
Then uv (the target's own, or unpacked from uv's wheel) or pip installs with no index.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Optional

from .. import shell
from ..remote import source
from ..errors import LabhopError
from ..target.layout import Layout
from ..target.probe import HostFacts
from ..settings import HostSettings
from ..steps import Command, Skip, Step, Transfer, Upload
from .wheelhouse import Manifest, Wheel, pip_install_args, uv_install_args




def offline_reason(facts: HostFacts, settings: HostSettings) -> Optional[str]:
    """Why provision installs from a wheelhouse, or None when the target can use its index."""
    if settings.offline:
        return "offline by request (--offline / offline = true)"
    index = facts.index
    if index is not None and not index.reachable:
        return f"{index.url} is unreachable from the target ({index.error or 'no answer'})"
    return None


def installer_uv(facts: HostFacts, layout: Layout, manifest: Optional[Manifest]) -> Optional[str]:
    """The uv the offline install will use: the target's, else one unpacked from the wheelhouse."""
    if facts.uv:
        return facts.uv
    if manifest is not None and (manifest.uv_wheel or manifest.pending):
        return layout.own_uv
    return None


def plan_push(facts: HostFacts, layout: Layout, manifest: Manifest) -> list[Step]:
    """Push the wheels the target lacks, check them, and unpack uv if the install needs it.

    The missing wheels travel as one bundle (their bytes one after another), named after
    what it holds: SFTP pays a round trip or two per file, and a cut transfer resumes at
    its byte offset as long as the same wheels are missing. The target splits it into
    wheels, each kept only if its sha256 matches.
    """
    directory = layout.wheelhouse
    if manifest.pending:  # dry run, wheelhouse not built yet: sizes unknown
        return [Upload(f"push the wheelhouse {manifest.key} (built first) to {directory}", directory)]
    need_uv = facts.uv is None and manifest.uv_wheel is not None
    wanted = [w for w in manifest.wheels if need_uv or w.name != manifest.uv_wheel]
    missing = [w for w in wanted if facts.wheelhouse.get(w.name) != w.size]
    steps: list[Step] = []
    if not missing:
        steps.append(Skip(f"push the wheelhouse to {directory}", f"all {len(wanted)} wheels already there"))
    else:
        bundle = bundle_name(missing)
        size = sum(w.size for w in missing)
        offset = facts.wheelhouse.get(bundle, 0)
        offset = offset if offset <= size else 0
        if offset < size:
            resumed = f", resuming after {mb(offset)}" if offset else ""
            steps.append(Upload(f"push {len(missing)} of {len(wanted)} wheels ({mb(size)}{resumed}) to {directory}",
                                directory, (Transfer(tuple(posixpath.join(manifest.directory, w.name) for w in missing),
                                                     posixpath.join(directory, bundle), size, offset),)))
        steps.append(Command(f"unpack {len(missing)} wheel(s) and check their sha256",
                             shell.join([facts.python_executable, "-c", source("unbundle.py"), directory, bundle]),
                             stdin=json.dumps([[w.name, w.size, w.sha256] for w in missing])))
    if need_uv:
        wheel_path = posixpath.join(directory, manifest.uv_wheel or "")
        unpack = [facts.python_executable, "-c", source("unpack_uv.py"), wheel_path, layout.own_uv]
        steps.append(Command(f"unpack uv from its wheel to {layout.own_uv}", shell.join(unpack)))
    return steps


def bundle_name(wheels: list[Wheel]) -> str:
    digest = hashlib.sha256("".join(f"{w.name} {w.sha256}\n" for w in wheels).encode()).hexdigest()[:16]
    return f".bundle-{digest}"


def venv_command(uv: str, python: str, venv: str) -> str:
    """A venv made by uv: no ensurepip (seconds faster), no need for Debian's python3-venv."""
    return f"UV_VENV_CLEAR=1 UV_PYTHON_DOWNLOADS=never {shell.join([uv, 'venv', '--quiet', '--python', python, venv])}"


def install_step(facts: HostFacts, layout: Layout, manifest: Manifest, requirements: list[str],
                 names: list[str]) -> Command:
    """Install with no index: every wheel comes from the pushed wheelhouse."""
    directory = layout.wheelhouse
    uv = installer_uv(facts, layout, manifest)
    if uv:
        install = shell.join(uv_install_args(uv, directory, layout.venv_python, requirements))
        # uv 0.13 was seen to segfault once in a loaded test run (no network involved): an installer
        # killed by a signal gets one more go, any other failure stands.
        command = (f"{install} || {{ rc=$?; [ $rc -gt 128 ] || exit $rc; "
                   f"echo \"uv died (exit $rc); trying once more\" >&2; {install}; }}")
        tool = "uv"
    else:
        command = shell.join(pip_install_args(layout.venv_python, directory, requirements))
        tool = "pip"
    return Command(f"install {', '.join(names)} into {layout.venv} from the wheelhouse with {tool}, no index",
                   command)


def mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def require_manifest(manifest: Optional[Manifest], reason: str) -> Manifest:
    if manifest is None:
        raise LabhopError(f"no wheelhouse to install from ({reason})")
    return manifest
