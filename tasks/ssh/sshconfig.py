"""ssh_config as OpenSSH reads it, for Fabric: paramiko's ``SSHConfig`` answered by ``ssh -G``.

paramiko parses ssh_config itself and does not know ``Include`` (a host defined in an included
file has no HostName, User, Port, ProxyJump or known_hosts setting for Fabric), nor every
``Match`` criterion or ``CanonicalizeHostname``. Where an ``ssh`` binary is and the config uses one
of those, ``use_ssh_g(config)`` puts ``OpenSSHConfig`` in place of the run's parsed files: each
lookup is ``ssh -G [-F FILE] HOST``, which is the client's own resolution (Include, Match,
Canonicalize*, tokens). ``-G`` prints every option, defaults included; only what differs from
ssh's defaults (``ssh -G -F none``) is handed on, so Fabric and labhop see what the config
*sets*, as with paramiko's parser (HostName, User and Port always).

A lookup that ``ssh -G`` cannot answer (a config it rejects) falls back to paramiko's parse; the
login then fails with ssh's own message.
"""
from __future__ import annotations

import getpass
import glob
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
from typing import Any, Optional

from paramiko import SSHConfig
from paramiko.config import SSHConfigDict

from .openssh import SSH

LIST_KEYS = frozenset({"identityfile", "certificatefile", "localforward", "remoteforward", "dynamicforward"})
ALWAYS = frozenset({"hostname", "user", "port"})
# -G prints these multistate values as true/false; ssh_config (and labhop's checks) spell them yes/no.
_YES_NO = {"true": "yes", "false": "no"}
_BASELINE_HOST = "labhop-defaults.invalid"


def _ssh_g(args: list[str], host: str) -> Optional[dict[str, list[str]]]:
    try:
        proc = subprocess.run([SSH, *args, "-G", "--", host], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    values: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key:
            values.setdefault(key.lower(), []).append(value)
    return values


class OpenSSHConfig(SSHConfig):
    """``lookup`` by ``ssh -G``; ``fallback`` (paramiko's parse of the same files) when that fails."""

    def __init__(self, config_file: Optional[str], fallback: SSHConfig) -> None:
        super().__init__()
        # What a plain copy of this object (Fabric's clone without tasks/ssh/sshconfig.py) would see.
        self._config = fallback._config  # type: ignore[attr-defined]
        self.config_file = config_file
        self.fallback = fallback
        self._cache: dict[str, SSHConfigDict] = {}
        self._baseline: Optional[dict[str, list[str]]] = None
        self._lock = threading.Lock()

    def _defaults(self) -> dict[str, list[str]]:
        with self._lock:
            if self._baseline is None:
                self._baseline = _ssh_g(["-F", "none"], _BASELINE_HOST) or {}
            return self._baseline

    def lookup(self, hostname: str) -> SSHConfigDict:
        with self._lock:
            cached = self._cache.get(hostname)
        if cached is not None:
            return _copy(cached)
        resolved = _ssh_g(["-F", self.config_file] if self.config_file else [], hostname)
        if resolved is None:
            return self.fallback.lookup(hostname)
        out = settings(resolved, self._defaults(), hostname)
        with self._lock:
            self._cache[hostname] = out
        return _copy(out)


def _copy(found: SSHConfigDict) -> SSHConfigDict:
    """Each Connection its own dict and lists (Fabric may add to what it is given)."""
    values: dict[str, Any] = dict(found)  # paramiko types it str -> str; identityfile is a list
    copied: dict[str, Any] = {key: list(value) if isinstance(value, list) else value for key, value in values.items()}
    return SSHConfigDict(copied)


def settings(resolved: dict[str, list[str]], defaults: dict[str, list[str]], alias: str) -> SSHConfigDict:
    """What ``ssh -G`` says the config sets, as paramiko's lookup would give it to Fabric."""
    out: dict[str, Any] = {}
    for key, values in resolved.items():
        if key not in ALWAYS and values == defaults.get(key):
            continue
        if key in LIST_KEYS:
            out[key] = [os.path.expanduser(v) for v in values] if key in ("identityfile", "certificatefile") \
                else list(values)
            continue
        value = values[-1]
        if key in ("proxycommand", "proxyjump") and value == "none":
            continue
        out[key] = _YES_NO.get(value, value) if key != "hostname" else value
    if "proxycommand" in out:  # ssh expands its tokens when it runs it; Fabric and labhop take it as is
        out["proxycommand"] = _expand_tokens(out["proxycommand"], out, alias)
    return SSHConfigDict(out)


def _expand_tokens(text: str, values: dict[str, Any], alias: str) -> str:
    tokens = {"h": values.get("hostname", alias), "p": values.get("port", "22"), "r": values.get("user", ""),
              "n": alias, "d": os.path.expanduser("~"), "u": getpass.getuser(), "%": "%",
              "k": values.get("hostkeyalias", alias)}
    out, i = [], 0
    while i < len(text):
        if text[i] == "%" and i + 1 < len(text):
            token = text[i + 1]
            if token in tokens:
                out.append(tokens[token])
            elif token in "lL":
                out.append(socket.gethostname() if token == "l" else socket.gethostname().split(".")[0])
            else:
                out.append(text[i:i + 2])
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def ssh_reads_what_fabric_reads(config_file: Optional[str]) -> bool:
    """Does ``ssh`` read the ssh_config Fabric read? With ``-F`` yes; else ssh takes ``~/.ssh/config``
    from the passwd entry, Fabric from ``$HOME`` (they differ where HOME is set elsewhere, as in CI
    jobs and tests; then labhop keeps handing ssh what Fabric found)."""
    if config_file:
        return True
    try:
        import pwd

        home = pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):
        return False
    ours = os.path.realpath(os.path.expanduser("~/.ssh/config"))
    return ours == os.path.realpath(os.path.join(home, ".ssh", "config"))


def use_ssh_g(config: Any) -> None:
    """Answer the run's ssh_config lookups with ``ssh -G`` (once per run, before any Connection).

    Not when Fabric reads no ssh_config (``load_ssh_configs`` off), nor without an ``ssh`` binary,
    nor with ``LABHOP_TRANSPORT=paramiko`` (paramiko's own reading, as asked). Fabric's
    ``Config.clone()`` (one per ProxyJump hop and per inventory hop) copies the parsed blocks into
    a plain ``SSHConfig``; the config's class is swapped for one whose clones share this object.
    """
    base = getattr(config, "base_ssh_config", None)
    if base is None or isinstance(base, OpenSSHConfig):
        return
    if not getattr(config, "load_ssh_configs", True):
        return
    if (os.environ.get("LABHOP_TRANSPORT") or "").lower() == "paramiko":
        return
    if shutil.which(SSH) is None:
        return
    runtime = getattr(config, "_runtime_ssh_path", None)
    if not ssh_reads_what_fabric_reads(runtime):
        return
    files = [runtime] if runtime else [getattr(config, "_user_ssh_path", "~/.ssh/config"),
                                       getattr(config, "_system_ssh_path", "/etc/ssh/ssh_config")]
    if not any(needs_ssh(os.path.expanduser(path)) for path in files if path):
        return  # paramiko reads such a file as ssh does, and costs no process per host
    config._set(base_ssh_config=OpenSSHConfig(getattr(config, "_runtime_ssh_path", None), base))
    object.__setattr__(config, "__class__", _sharing(type(config)))


_BEYOND_PARAMIKO = re.compile(r"^\s*(include|match|canonicalizehostname)\b[\s=]*(.*)$", re.I | re.M)


def needs_ssh(path: str) -> bool:
    """The file uses what paramiko's parser does not do as ssh does: Match, canonicalization, or an
    Include that finds a file (Debian's /etc/ssh/ssh_config includes an often empty ssh_config.d)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return False
    base = os.path.dirname(path)  # ssh: relative to ~/.ssh for the user's file, /etc/ssh for the system's
    for found in _BEYOND_PARAMIKO.finditer(text):
        if found.group(1).lower() != "include":
            return True
        for pattern in shlex.split(found.group(2), comments=True):
            pattern = os.path.expanduser(pattern)
            if glob.glob(pattern if os.path.isabs(pattern) else os.path.join(base, pattern)):
                return True
    return False


_SHARING: dict[type, type] = {}


def _sharing(cls: type) -> type:
    if getattr(cls, "_labhop_shares_ssh_config", False):
        return cls
    parent: Any = cls
    if cls not in _SHARING:
        def _clone_init_kwargs(self: Any, *args: Any, **kwargs: Any) -> Any:
            made = parent._clone_init_kwargs(self, *args, **kwargs)
            if isinstance(self.base_ssh_config, OpenSSHConfig):
                made["ssh_config"] = self.base_ssh_config
            return made

        shared = type(cls.__name__, (cls,), {"_clone_init_kwargs": _clone_init_kwargs,
                                              "_labhop_shares_ssh_config": True,
                                              "__module__": cls.__module__})
        _SHARING[cls] = shared
    return _SHARING[cls]
