"""Facts about a target, gathered in one round trip.

The probe itself is tasks/remote/probe.py: it runs on the target under its own python3 (fed on
stdin, so no quoting games and nothing long in an argv; after the lock holder, tasks/target/lock.py)
and prints one JSON document; ``parse_facts`` turns it into ``HostFacts``. Pure: the executor does
the running.

A new fact: gathered in tasks/remote/probe.py (``gather``), parsed in ``facts_from`` below into a
``HostFacts`` field, and shown by a case in tests/unit/probe_cases/.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import LabhopError
from ..offline.signature import TargetSignature, parse_signature
from ..remote import source
from .layout import PATHS, PROFILE_BEGIN, PROFILE_END, PROFILES, RMATE_LINK


def probe_source() -> str:
    """tasks/remote/probe.py, as shipped to the target."""
    return source("probe.py")


MIN_PYTHON = (3, 9)


@dataclass(frozen=True)
class ServerFacts:
    pid: Optional[int] = None
    alive: bool = False
    since: Optional[float] = None
    kernels: Optional[int] = None  # running kernels of a live server (None: not counted)


@dataclass(frozen=True)
class IndexCheck:
    """Could the target reach its package index (PIP_INDEX_URL / pip.conf / PyPI)? URL without credentials."""
    url: str
    source: str  # the variable or file that named it, or "default"
    reachable: bool
    error: Optional[str] = None


@dataclass(frozen=True)
class Room:
    """The directory labhop writes into first (the prefix or its nearest existing parent)."""

    dir: str
    writable: bool
    free: int  # bytes available to the target user


@dataclass(frozen=True)
class TargetTls:
    """``<prefix>/tls`` on the target (the public variant's pair, tasks/certs.py)."""

    cert: Optional[str] = None  # the certificate PEM (public)
    key_sha256: Optional[str] = None  # of the private key only a digest travels back
    pair_ok: Optional[bool] = None  # the target's ssl module loaded cert + key together


@dataclass(frozen=True)
class HostFacts:
    python_executable: str
    python_version: tuple[int, int, int]
    python_implementation: str = "CPython"
    user: str = ""
    uid: int = -1
    home: str = ""
    shell: str = "/bin/sh"
    hostname: str = ""
    prefix: str = ""
    prefix_exists: bool = False
    # labhop submitted a Slurm job from here once (serve --slurm): status/stop/logs/tunnel ask squeue
    slurm_job: bool = False
    bin_dir: str = ""
    tmux: Optional[str] = None
    uv: Optional[str] = None
    venv_exists: bool = False
    venv_version: Optional[str] = None
    venv_packages: dict[str, str] = field(default_factory=dict)
    venv_complete: bool = False  # its creation finished (marker), see tasks/packages.py venv_ok
    venv_installed: Optional[str] = None  # the requirements the last complete install step installed
    room: Optional[Room] = None  # can labhop write below the prefix, and how much
    rmate_link: Optional[str] = None
    rmate_link_labhop: bool = False
    rmate_link_dangling: bool = False  # a symlink whose target no longer exists (a deleted prefix)
    login_path: Optional[str] = None
    profiles: dict[str, bool] = field(default_factory=dict)
    config: Optional[str] = None
    server: ServerFacts = field(default_factory=ServerFacts)
    port_free: Optional[bool] = None  # the named port can be bound
    free_port: Optional[int] = None  # no port named: the first free one from the remembered one (or 8888) up
    root_dir_exists: Optional[bool] = None  # the root dir this run names is a directory (None: none named)
    notebook_app_files: tuple[str, ...] = ()  # config files with old NotebookApp settings the server would read
    signature: Optional[TargetSignature] = None
    index: Optional[IndexCheck] = None  # None: not checked (not asked, or nothing to install)
    wheelhouse: dict[str, int] = field(default_factory=dict)  # <prefix>/wheelhouse: name -> size
    tls: TargetTls = field(default_factory=TargetTls)
    ssh_address: Optional[str] = None  # the address SSH reached the target at (SSH_CONNECTION)
    # The user's environments and labhop's kernelspecs, as the probe reports them (tasks/kernels.py kernel_facts)
    kernels: dict[str, Any] = field(default_factory=dict)

    @property
    def python_ok(self) -> bool:
        return self.python_version[:2] >= MIN_PYTHON

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def probe_args(prefix: str, bin_dir: str, port: Optional[int] = None, ip: Optional[str] = None,
               *, index: bool = False, packages: tuple[str, ...] = (), kernels: Optional[dict[str, Any]] = None,
               root_dir: Optional[str] = None, scan: Optional[dict[str, Any]] = None,
               notebook_app_keys: tuple[str, ...] = ()) -> str:
    """The probe's argument (JSON). ``index``: check the package index when ``packages`` are not all
    installed in the venv. ``kernels``: the environments to discover (tasks/kernels.py probe_request);
    None lists only the kernelspecs labhop registered. ``port``: check that it is free; ``scan`` (no port
    named): find the first free one (``free_port``); ``root_dir``: check it is a directory;
    ``notebook_app_keys``: look for old NotebookApp settings of these. Every path below the prefix and
    every marker comes from tasks/target/layout.py."""
    return json.dumps({"prefix": prefix, "bin_dir": bin_dir, "port": port, "ip": ip, "root_dir": root_dir,
                       "scan": scan, "notebook_app_keys": list(notebook_app_keys),
                       "index": index, "packages": list(packages), "kernels": kernels, "paths": PATHS,
                       "profiles": list(PROFILES), "profile_markers": [PROFILE_BEGIN, PROFILE_END],
                       "rmate_link": RMATE_LINK})


def parse_facts(stdout: str) -> HostFacts:
    """Parse the probe's JSON (the last line: login scripts may print before it)."""
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise LabhopError(f"the host probe printed no facts: {stdout.strip()[-200:]!r}")
    try:
        raw = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise LabhopError(f"the host probe printed unreadable facts: {exc}") from None
    return facts_from(raw)


def facts_from(raw: dict[str, Any]) -> HostFacts:
    """``HostFacts`` from the probe's JSON document, already decoded."""
    py = raw["python"]
    version = tuple(py["version"]) + (0,) * (3 - len(py["version"]))
    venv = raw.get("venv", {})
    server = raw.get("server", {})
    index = raw.get("index")
    tls = raw.get("tls") or {}
    return HostFacts(
        python_executable=py["executable"],
        python_version=version[:3],
        python_implementation=py.get("implementation", "CPython"),
        user=raw.get("user", ""),
        uid=raw.get("uid", -1),
        home=raw.get("home", ""),
        shell=raw.get("shell") or "/bin/sh",
        hostname=raw.get("hostname", ""),
        prefix=raw.get("prefix", ""),
        prefix_exists=raw.get("prefix_exists", False),
        slurm_job=bool(raw.get("slurm_job", False)),
        bin_dir=raw.get("bin_dir", ""),
        tmux=raw.get("tmux"),
        uv=raw.get("uv"),
        venv_exists=venv.get("exists", False),
        venv_version=venv.get("version"),
        venv_packages=dict(venv.get("packages", {})),
        venv_complete=bool(venv.get("complete", False)),
        venv_installed=venv.get("installed"),
        room=Room(**raw["room"]) if raw.get("room") else None,
        rmate_link=raw.get("rmate_link"),
        rmate_link_labhop=bool(raw.get("rmate_link_labhop", False)),
        rmate_link_dangling=bool(raw.get("rmate_link_dangling", False)),
        login_path=raw.get("login_path"),
        profiles=dict(raw.get("profiles", {})),
        config=raw.get("config"),
        server=ServerFacts(pid=server.get("pid"), alive=server.get("alive", False), since=server.get("since"),
                           kernels=server.get("kernels")),
        port_free=raw.get("port_free"),
        free_port=raw.get("free_port"),
        root_dir_exists=raw.get("root_dir_exists"),
        notebook_app_files=tuple(raw.get("notebook_app_files") or ()),
        signature=parse_signature(raw.get("signature")),
        index=IndexCheck(url=index.get("url", ""), source=index.get("source", ""),
                         reachable=bool(index.get("reachable")), error=index.get("error")) if index else None,
        wheelhouse={str(k): int(v) for k, v in (raw.get("wheelhouse") or {}).items()},
        tls=TargetTls(cert=tls.get("cert"), key_sha256=tls.get("key_sha256"), pair_ok=tls.get("pair_ok")),
        ssh_address=raw.get("ssh_address"),
        kernels=dict(raw.get("kernels") or {}),
    )


if __name__ == "__main__":  # the probe's argument, for running tasks/remote/probe.py by hand on a target
    import sys

    from .layout import DEFAULT_BIN_DIR, DEFAULT_PREFIX

    print(probe_args(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_PREFIX,
                     sys.argv[2] if len(sys.argv) > 2 else DEFAULT_BIN_DIR))
