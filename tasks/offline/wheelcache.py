"""The controller's wheelhouse cache: built once per target signature, reused by every alike host.

``~/.cache/labhop/wheelhouse/<signature key>/`` (``$LABHOP_CACHE_DIR`` or
``$XDG_CACHE_HOME/labhop`` instead of ``~/.cache/labhop``) holds the wheels and a
manifest with their sizes and sha256. Building runs the controller's own pip with
the target's interpreter signature (tasks/offline/wheelhouse.py); this module runs things on
the controller only, never on a target.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..errors import LabhopError
from .install import mb, offline_reason
from ..target.layout import Layout
from ..packages import missing_packages, wanted_packages
from ..target.probe import HostFacts
from ..settings import HostSettings
from .signature import TargetSignature
from .wheelhouse import (MANIFEST, UV_REQUIREMENT, Manifest, Wheel, binary_requirements, check_complete,
                         manifest_from_json, pip_download_args, pip_wheel_args, source_requirements,
                         wheel_project)

CACHE_ENV = "LABHOP_CACHE_DIR"
PROGRESS_EVERY = 3.0  # seconds between progress lines while pip downloads

Say = Callable[[str], None]


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        base = Path(os.environ[CACHE_ENV])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labhop"
    return base / "wheelhouse"


def wheelhouse_for(facts: HostFacts, settings: HostSettings, say: Say, *, dry_run: bool = False) -> Optional[Manifest]:
    """The wheels this provision pushes: none when there is nothing to install; every wheel when the
    target cannot reach its index; uv's alone when it can (tasks/offline/online.py). Built now if not
    cached (a dry run only says it would)."""
    if not missing_packages(facts, settings):
        return None
    reason = offline_reason(facts, settings)
    if reason is None:
        return uv_wheel_for(facts, say, dry_run=dry_run)
    if facts.signature is None:
        raise LabhopError("the host probe reported no interpreter signature; cannot choose wheels for it")
    say(f"installing without a package index: {reason}")
    return ensure_wheelhouse(facts.signature, list(wanted_packages(settings).values()), say, build=not dry_run)


def uv_wheel_for(facts: HostFacts, say: Say, *, dry_run: bool = False) -> Optional[Manifest]:
    """uv's wheel for the target, cached like a wheelhouse; None (and a line saying so) when this
    machine cannot get one for it: the target then installs with its own uv or with pip."""
    if facts.uv == Layout(facts.prefix).own_uv:
        return None  # an earlier run unpacked it there
    if facts.signature is None:
        return None
    try:
        return ensure_wheelhouse(facts.signature, [UV_REQUIREMENT], say, build=not dry_run)
    except LabhopError as exc:
        say(f"no uv to bring to this target ({exc}): it installs with {facts.uv or 'pip'}")
        return None


def ensure_wheelhouse(sig: TargetSignature, requirements: list[str], say: Say, *, build: bool = True,
                      root: Optional[Path] = None) -> Manifest:
    root = root or cache_root()
    key = sig.key(requirements)
    directory = root / key
    cached = _load(directory, requirements)
    uv_only = list(requirements) == [UV_REQUIREMENT]
    if cached is not None:
        if not uv_only:
            say(f"wheelhouse for {sig.describe()}: {len(cached.wheels)} wheels, {mb(cached.size)}, "
                f"cached in {directory}")
        return cached
    if not build:
        say(f"{'uv' if uv_only else 'wheelhouse'} for {sig.describe()}: not cached yet; "
            f"a real run {'downloads' if uv_only else 'builds'} it in {directory}")
        return Manifest(key=key, directory=str(directory), requirements=tuple(requirements), pending=True)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(root / f".{key}.lock"):
        cached = _load(directory, requirements)  # built by another run while we waited
        if cached is not None:
            return cached
        return _build(sig, requirements, directory, say)


def _load(directory: Path, requirements: list[str]) -> Optional[Manifest]:
    """The cached manifest if every wheel it lists is there at its size; else None (rebuild)."""
    path = directory / MANIFEST
    if not path.is_file():
        return None
    manifest = manifest_from_json(path.read_text(), str(directory))
    for wheel in manifest.wheels:
        try:
            if (directory / wheel.name).stat().st_size != wheel.size:
                return None
        except OSError:
            return None
    check_complete(manifest, requirements)
    return manifest


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(sig: TargetSignature, requirements: list[str], directory: Path, say: Say) -> Manifest:
    """Download (and build) every wheel into a temporary directory, then move it into place.

    The three pip runs (the dependency set, the sdist-only builds, uv) go at once: each
    mostly waits on the network.
    """
    started = time.monotonic()
    tmp = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    uv_only = list(requirements) == [UV_REQUIREMENT]  # what an online target needs (tasks/offline/online.py)
    say(f"{'downloading uv' if uv_only else 'building a wheelhouse'} for {sig.describe()} in {directory}")
    runs = [_Pip(pip_download_args(sig, binary_requirements(requirements), str(tmp), no_deps=uv_only),
                 f"downloading {'uv' if uv_only else 'wheels'} for {sig.describe()}")]
    runs += [_Pip(pip_wheel_args(r, str(tmp)), f"building a wheel of {r}") for r in source_requirements(requirements)]
    uv = runs[0] if uv_only else _Pip(pip_download_args(sig, [UV_REQUIREMENT], str(tmp), no_deps=True),
                                      "downloading uv")
    try:
        last = time.monotonic()
        while any(run.poll() is None for run in [*runs, uv]):
            time.sleep(0.2)
            if time.monotonic() - last >= PROGRESS_EVERY:
                last = time.monotonic()
                say(f"  {runs[0].progress()}, {time.monotonic() - started:.0f}s")
        for run in runs:
            run.check()
        if uv.poll() != 0:
            say(f"  no uv wheel for this target ({uv.error()}): it will install with pip, slower")
        wheels = tuple(_describe(path) for path in sorted(tmp.glob("*.whl")))
        uv_wheel = next((w.name for w in wheels if wheel_project(w.name) == "uv"), None)
        manifest = Manifest(key=directory.name, directory=str(directory), requirements=tuple(requirements),
                            wheels=wheels, uv_wheel=uv_wheel, signature=sig.as_dict())
        check_complete(manifest, requirements)
        (tmp / MANIFEST).write_text(manifest.to_json())
        shutil.rmtree(directory, ignore_errors=True)  # an incomplete older copy
        os.rename(tmp, directory)
    finally:
        for run in [*runs, uv]:
            run.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    what = manifest.uv_wheel if uv_only else f"{len(wheels)} wheels"
    say(f"  {'downloaded' if uv_only else 'built'}: {what}, {mb(manifest.size)} in {time.monotonic() - started:.1f}s")
    return manifest


def _describe(path: Path) -> Wheel:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return Wheel(path.name, path.stat().st_size, digest.hexdigest())


_SIZE = re.compile(r"\((\d+(?:\.\d+)?) (kB|MB|GB)\)")
_UNIT = {"kB": 1e3, "MB": 1e6, "GB": 1e9}


class _Pip:
    """One run of the controller's pip, read line by line in a thread for progress and errors."""

    def __init__(self, args: list[str], what: str) -> None:
        self.what = what
        self.collected = 0
        self.downloaded = 0.0
        self.tail: list[str] = []
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "pip", *args], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                         errors="replace")
        except OSError as exc:
            raise LabhopError(f"{what}: cannot run {sys.executable} -m pip: {exc.strerror}") from None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("Collecting "):
                self.collected += 1
            elif line.startswith(("Downloading ", "Using cached ")):
                size = _SIZE.search(line)
                if size:
                    self.downloaded += float(size.group(1)) * _UNIT[size.group(2)]
            if line and not line.startswith("WARNING"):
                self.tail = (self.tail + [line])[-3:]

    def poll(self) -> Optional[int]:
        code = self.proc.poll()
        if code is not None:
            self.reader.join(timeout=5)
        return code

    def progress(self) -> str:
        return f"{self.what}: {self.collected} packages resolved, {mb(int(self.downloaded))} fetched"

    def error(self) -> str:
        return " | ".join(self.tail) or f"exit {self.proc.returncode}"

    def check(self) -> None:
        if self.poll() != 0:
            raise LabhopError(f"{self.what} failed: {self.error()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
