"""Installing on a target that cannot reach a package index: the steps, from a wheelhouse.

Pure. When the probe finds the index unreachable (or the user says ``--offline`` /
``offline = true``), provision pushes the controller's wheelhouse (tasks/wheelhouse.py)
to ``<prefix>/wheelhouse``: only the wheels not already there, appending to those a
cut connection left half-sent; each arrives as ``NAME.part`` and becomes ``NAME`` once
its sha256 matches. Then uv (the target's own, or unpacked from uv's wheel) or pip
installs with no index at all.
"""
from __future__ import annotations

import json
import posixpath
from typing import Optional

from . import shell
from .errors import LabhopError
from .layout import Layout
from .probe import HostFacts
from .settings import HostSettings
from .steps import Command, Skip, Step, Transfer, Upload
from .wheelhouse import Manifest, pip_install_args, uv_install_args

PART = ".part"

VERIFY_SOURCE = r'''
import hashlib, json, os, sys
directory = sys.argv[1]
wanted = json.loads(sys.stdin.read())
bad = []
for name in sorted(wanted):
    part = os.path.join(directory, name + ".part")
    digest = hashlib.sha256()
    try:
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        bad.append("%s (%s)" % (name, e.strerror)); continue
    if digest.hexdigest() == wanted[name]:
        os.rename(part, os.path.join(directory, name))
    else:
        os.remove(part); bad.append(name)
if bad:
    sys.stderr.write("%d wheel(s) arrived damaged and were removed (run again to resend them): %s\n"
                     % (len(bad), ", ".join(bad)))
    sys.exit(1)
'''

UNPACK_UV_SOURCE = r'''
import os, shutil, subprocess, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    member = [n for n in z.namelist() if n.endswith(".data/scripts/uv")][0]
    os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
    tmp = dest + ".tmp"
    with z.open(member) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out)
os.chmod(tmp, 0o755)
subprocess.check_call([tmp, "--version"], stdout=subprocess.DEVNULL)  # it runs on this host
os.rename(tmp, dest)
'''


def offline_reason(facts: HostFacts, settings: HostSettings) -> Optional[str]:
    """Why provision installs from a wheelhouse, or None when the target can use its index."""
    if settings.offline:
        return "offline by request (--offline / offline = true)"
    index = facts.index
    if index is not None and not index.reachable:
        return f"{index.url} is unreachable from the target ({index.error or 'no answer'})"
    return None


def remote_wheelhouse(layout: Layout) -> str:
    return posixpath.join(layout.prefix, "wheelhouse")


def own_uv(layout: Layout) -> str:
    """Where labhop unpacks uv's binary from its wheel (the probe looks here before PATH)."""
    return posixpath.join(layout.prefix, "bin", "uv")


def installer_uv(facts: HostFacts, layout: Layout, manifest: Optional[Manifest]) -> Optional[str]:
    """The uv the offline install will use: the target's, else one unpacked from the wheelhouse."""
    if facts.uv:
        return facts.uv
    if manifest is not None and (manifest.uv_wheel or manifest.pending):
        return own_uv(layout)
    return None


def plan_push(facts: HostFacts, layout: Layout, manifest: Manifest) -> list[Step]:
    """Push the wheels the target lacks, verify them, and unpack uv if the install needs it."""
    directory = remote_wheelhouse(layout)
    if manifest.pending:  # dry run, wheelhouse not built yet: sizes unknown
        return [Upload(f"push the wheelhouse {manifest.key} (built first) to {directory}", directory)]
    need_uv = facts.uv is None and manifest.uv_wheel is not None
    wanted = [w for w in manifest.wheels if need_uv or w.name != manifest.uv_wheel]
    present = facts.wheelhouse
    transfers: list[Transfer] = []
    verify: dict[str, str] = {}
    for wheel in wanted:
        if present.get(wheel.name) == wheel.size:
            continue  # arrived and verified on an earlier run
        offset = present.get(wheel.name + PART, 0)
        offset = offset if offset <= wheel.size else 0
        verify[wheel.name] = wheel.sha256
        if offset < wheel.size:
            transfers.append(Transfer(posixpath.join(manifest.directory, wheel.name),
                                      posixpath.join(directory, wheel.name + PART), wheel.size, offset))
    steps: list[Step] = []
    total = sum(w.size for w in wanted)
    if not verify:
        steps.append(Skip(f"push the wheelhouse to {directory}", f"all {len(wanted)} wheels already there"))
    else:
        sending = sum(t.size - t.offset for t in transfers)
        resumed = " (resuming a cut transfer)" if any(t.offset for t in transfers) else ""
        if transfers:
            steps.append(Upload(f"push {len(transfers)} of {len(wanted)} wheels ({mb(sending)} of {mb(total)}) "
                                f"to {directory}{resumed}", directory, tuple(transfers)))
        steps.append(Command(f"verify {len(verify)} wheel(s) (sha256) and move them into place",
                             shell.join([facts.python_executable, "-c", VERIFY_SOURCE, directory]),
                             stdin=json.dumps(verify)))
    if need_uv:
        wheel_path = posixpath.join(directory, manifest.uv_wheel or "")
        steps.append(Command(f"unpack uv from its wheel to {own_uv(layout)}",
                             shell.join([facts.python_executable, "-c", UNPACK_UV_SOURCE, wheel_path, own_uv(layout)])))
    return steps


def venv_command(uv: str, python: str, venv: str) -> str:
    """A venv made by uv: no ensurepip (seconds faster), no need for Debian's python3-venv."""
    return f"UV_VENV_CLEAR=1 UV_PYTHON_DOWNLOADS=never {shell.join([uv, 'venv', '--quiet', '--python', python, venv])}"


def install_step(facts: HostFacts, layout: Layout, manifest: Manifest, requirements: list[str],
                 names: list[str]) -> Command:
    """Install with no index: every wheel comes from the pushed wheelhouse."""
    directory = remote_wheelhouse(layout)
    uv = installer_uv(facts, layout, manifest)
    if uv:
        command = shell.join(uv_install_args(uv, directory, layout.venv_python, requirements))
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
