"""The target's interpreter, as wheels see it: version, implementation, ABI, platform.

Pure. The probe reports raw facts (``sys.version_info``, ``SOABI``, glibc version,
machine); ``parse_signature`` turns them into a ``TargetSignature`` whose
``platforms`` and ``abi`` are what ``pip download --platform/--abi`` needs to
resolve wheels for *that* interpreter, not the controller's. Patch versions
matter (a ``Requires-Python: >=3.11.5`` dependency must not be picked for a
3.11.2 target), so the full version travels everywhere, the cache key included.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from ..errors import LabhopError

# Lowest glibc minor with a manylinux tag per architecture (PEP 600: 2_17 is manylinux2014's floor;
# x86 also had manylinux1/2010 on older glibc).
_MANYLINUX_FLOOR = {"x86_64": 5, "i686": 5}
_DEFAULT_FLOOR = 17
# PEP 600 legacy aliases: tag -> the glibc minor it stands for (x86 only for the two oldest).
_LEGACY = (("manylinux2014", 17, None), ("manylinux2010", 12, ("x86_64", "i686")),
           ("manylinux1", 5, ("x86_64", "i686")))
_IMPLEMENTATION_TAGS = {"CPython": "cp", "PyPy": "pp", "GraalVM": "graalpy"}
# Bump when the wheelhouse layout or the way it is resolved changes: old caches are then not reused.
KEY_FORMAT = 1


@dataclass(frozen=True)
class TargetSignature:
    version: tuple[int, int, int]
    implementation: str  # platform.python_implementation(): CPython, PyPy
    abi: str  # the interpreter's own ABI tag: cp311, cp313t, pypy39_pp73
    system: str  # sys.platform: linux, darwin
    machine: str  # wheel architecture: x86_64, aarch64, i686, arm64
    libc: Optional[str] = None  # glibc | musl (linux only)
    libc_version: Optional[tuple[int, int]] = None
    mac_version: Optional[tuple[int, int]] = None

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def implementation_tag(self) -> str:
        return _IMPLEMENTATION_TAGS.get(self.implementation, self.implementation.lower()[:2])

    @property
    def platforms(self) -> list[str]:
        """Every platform tag a wheel for this target may carry, most specific first."""
        if self.system == "linux":
            if self.libc == "glibc" and self.libc_version:
                return manylinux_platforms(self.libc_version, self.machine)
            if self.libc == "musl" and self.libc_version:
                major, minor = self.libc_version
                return [f"musllinux_{major}_{m}_{self.machine}" for m in range(minor, 0, -1)]
            raise LabhopError(f"cannot tell the target's C library ({self.libc or 'unknown'}): "
                              f"no binary wheels can be chosen for it")
        if self.system == "darwin" and self.mac_version:
            major, minor = self.mac_version
            # pip expands one macosx tag to every older version and universal2 itself.
            return [f"macosx_{major}_{minor if major < 11 else 0}_{self.machine}"]
        raise LabhopError(f"offline install supports Linux and macOS targets, not {self.system}")

    @property
    def platform_label(self) -> str:
        """The most specific platform tag, for humans and cache directory names."""
        return self.platforms[0]

    def describe(self) -> str:
        return f"{self.implementation} {self.version_text} ({self.abi}, {self.platform_label})"

    def as_dict(self) -> dict[str, Any]:
        return {"version": list(self.version), "implementation": self.implementation, "abi": self.abi,
                "system": self.system, "machine": self.machine, "libc": self.libc,
                "libc_version": list(self.libc_version) if self.libc_version else None,
                "mac_version": list(self.mac_version) if self.mac_version else None}

    def key(self, requirements: Iterable[str]) -> str:
        """Cache key: readable prefix + a digest of everything that changes the wheel set."""
        material = json.dumps({"format": KEY_FORMAT, "signature": self.as_dict(),
                               "requirements": sorted(requirements)}, sort_keys=True)
        digest = hashlib.sha256(material.encode()).hexdigest()[:12]
        return f"{self.implementation_tag}{self.version_text}-{self.abi}-{self.platform_label}-{digest}"


def manylinux_platforms(glibc: tuple[int, int], machine: str) -> list[str]:
    """manylinux_2_N tags from the target's glibc down to the architecture's floor, plus legacy aliases.

    pip does not expand ``manylinux_2_36_x86_64`` to older glibc versions by itself,
    so every compatible tag is listed (packaging's own rule for the running interpreter).
    """
    major, minor = glibc
    if major != 2:
        raise LabhopError(f"glibc {major}.{minor} is not a version manylinux knows")
    floor = _MANYLINUX_FLOOR.get(machine, _DEFAULT_FLOOR)
    tags = [f"manylinux_2_{m}_{machine}" for m in range(minor, floor - 1, -1)]
    for alias, needs, arches in _LEGACY:
        if minor >= needs and (arches is None or machine in arches):
            tags.append(f"{alias}_{machine}")
    return tags


def abi_tag(implementation: str, version: tuple[int, ...], soabi: Optional[str],
            abiflags: str = "") -> str:
    """The interpreter's ABI tag, from SOABI the way packaging reads it.

    ``cpython-311-x86_64-linux-gnu`` -> ``cp311``; ``cpython-313t-...`` -> ``cp313t``;
    ``pypy39-pp73-...`` -> ``pypy39_pp73``. Without SOABI: ``cp`` + version + abiflags.
    """
    if soabi:
        parts = soabi.split("-")
        if parts[0] == "cpython" and len(parts) > 1:
            return "cp" + parts[1]
        if parts[0].startswith("pypy") and len(parts) > 1:
            return f"{parts[0]}_{parts[1]}"
        return re.sub(r"[.-]", "_", "-".join(parts[:2]))
    if implementation == "CPython":
        return f"cp{version[0]}{version[1]}{abiflags}"
    raise LabhopError(f"cannot tell the ABI of a {implementation} interpreter without SOABI")


def wheel_machine(machine: str, bits: int) -> str:
    """The architecture name in wheel tags (a 32-bit interpreter on a 64-bit kernel, as packaging does)."""
    machine = {"amd64": "x86_64", "i386": "i686", "i486": "i686", "i586": "i686"}.get(machine.lower(), machine.lower())
    if bits == 32:
        return {"x86_64": "i686", "aarch64": "armv8l"}.get(machine, machine)
    return machine


def _pair(text: Optional[str]) -> Optional[tuple[int, int]]:
    match = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_signature(raw: Optional[dict[str, Any]]) -> Optional[TargetSignature]:
    """From the probe's ``signature`` object (see tasks/target/probe.py); None if the probe sent none."""
    if not raw:
        return None
    try:
        version = tuple(int(v) for v in raw["version"])
        version = (version + (0, 0, 0))[:3]
        implementation = str(raw.get("implementation") or "CPython")
        system = str(raw.get("system") or "linux")
        if system.startswith("linux"):
            system = "linux"
        libc, libc_version = None, None
        if raw.get("libc"):  # "glibc 2.36" | "musl 1.2.4"
            name, _, number = str(raw["libc"]).partition(" ")
            libc, libc_version = name.lower(), _pair(number)
        return TargetSignature(
            version=version,  # type: ignore[arg-type]
            implementation=implementation,
            abi=abi_tag(implementation, version, raw.get("soabi"), raw.get("abiflags") or ""),
            system=system,
            machine=wheel_machine(str(raw.get("machine") or ""), int(raw.get("bits") or 64)),
            libc=libc,
            libc_version=libc_version,
            mac_version=_pair(raw.get("mac")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LabhopError(f"the host probe sent an unreadable interpreter signature: {exc}") from None
