"""A wheelhouse: every wheel an offline target needs, resolved for the target's interpreter.

Pure. ``pip_download_args`` says how the controller downloads wheels for a
``TargetSignature`` (binary only, the target's full Python version, its ABI and
every platform tag its libc accepts); ``Manifest`` records what was downloaded
(name, size, sha256), so that the target gets only what it lacks and checks what
arrived. tasks/offline/wheelcache.py runs the downloads and keeps the cache.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from ..errors import LabhopError
from .signature import TargetSignature

# PyPI has only an sdist of these; they are pure Python, so the controller builds a
# py3-none-any wheel of each (no dependencies to follow).
SDIST_ONLY = frozenset({"rmate"})
# Travels with every wheelhouse: uv installs the set several times faster than pip on the target.
UV_REQUIREMENT = "uv"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Wheel:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """A built (or, for a dry run, not yet built) wheelhouse on the controller."""

    key: str
    directory: str  # controller path holding the wheels
    requirements: tuple[str, ...]
    wheels: tuple[Wheel, ...] = ()
    uv_wheel: Optional[str] = None  # uv's own wheel, when one exists for the target
    signature: Optional[dict[str, Any]] = None
    pending: bool = False  # dry run: would be built first

    @property
    def size(self) -> int:
        return sum(w.size for w in self.wheels)

    def to_json(self) -> str:
        return json.dumps({"key": self.key, "requirements": list(self.requirements),
                           "signature": self.signature, "uv_wheel": self.uv_wheel,
                           "wheels": [[w.name, w.size, w.sha256] for w in self.wheels]}, indent=1)


def manifest_from_json(text: str, directory: str) -> Manifest:
    try:
        raw = json.loads(text)
        wheels = tuple(Wheel(str(n), int(s), str(h)) for n, s, h in raw["wheels"])
        return Manifest(key=raw["key"], directory=directory, requirements=tuple(raw["requirements"]),
                        wheels=wheels, uv_wheel=raw.get("uv_wheel"), signature=raw.get("signature"))
    except (ValueError, KeyError, TypeError) as exc:
        raise LabhopError(f"{directory}/{MANIFEST} is damaged ({exc}); delete that directory to rebuild it") from None


def project_name(requirement: str) -> str:
    """``jupyterlab>=4,<5`` -> ``jupyterlab`` (normalized as PEP 503 does)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise LabhopError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def wheel_project(filename: str) -> str:
    """``uv-0.9.1-py3-none-manylinux_2_17_x86_64.whl`` -> ``uv``."""
    return re.sub(r"[-_.]+", "-", filename.split("-", 1)[0]).lower()


def binary_requirements(requirements: Iterable[str]) -> list[str]:
    return [r for r in requirements if project_name(r) not in SDIST_ONLY]


def source_requirements(requirements: Iterable[str]) -> list[str]:
    return [r for r in requirements if project_name(r) in SDIST_ONLY]


def target_args(sig: TargetSignature) -> list[str]:
    """pip's options that make it resolve for the target's interpreter instead of its own."""
    args = ["--python-version", sig.version_text, "--implementation", sig.implementation_tag, "--abi", sig.abi]
    for platform in sig.platforms:
        args += ["--platform", platform]
    return args


def pip_download_args(sig: TargetSignature, requirements: Iterable[str], dest: str, *,
                      no_deps: bool = False) -> list[str]:
    """``python -m pip`` arguments downloading binary wheels of ``requirements`` (and their
    dependencies unless ``no_deps``) for the target into ``dest``."""
    reqs = list(requirements)
    if not reqs:
        raise LabhopError("nothing to download")
    return ["download", "--only-binary=:all:", "--dest", dest, "--progress-bar", "off",
            "--disable-pip-version-check", *target_args(sig), *(["--no-deps"] if no_deps else []), *reqs]


def pip_wheel_args(requirement: str, dest: str) -> list[str]:
    """``python -m pip`` arguments building a pure wheel of an sdist-only requirement."""
    return ["wheel", "--no-deps", "--wheel-dir", dest, "--progress-bar", "off",
            "--disable-pip-version-check", requirement]


def uv_install_args(uv: str, wheelhouse: str, python: str, requirements: Iterable[str]) -> list[str]:
    """Install on the target from the pushed wheelhouse alone (no index, no network)."""
    return [uv, "pip", "install", "--offline", "--no-index", "--find-links", wheelhouse,
            "--python", python, "--quiet", *requirements]


def pip_install_args(python: str, wheelhouse: str, requirements: Iterable[str]) -> list[str]:
    return [python, "-m", "pip", "install", "--no-index", "--find-links", wheelhouse,
            "--disable-pip-version-check", "--quiet", *requirements]


def check_complete(manifest: Manifest, requirements: Iterable[str]) -> None:
    """Every requirement has a wheel (pip download would have failed otherwise; a damaged cache would not)."""
    have = {wheel_project(w.name) for w in manifest.wheels}
    missing = [r for r in requirements if project_name(r) not in have]
    if missing:
        raise LabhopError(f"the wheelhouse {manifest.directory} has no wheel for {', '.join(missing)}; "
                          f"delete it to rebuild")
