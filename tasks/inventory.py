"""inventory.toml: named hosts, their settings, and groups of hosts.

Pure: parsing and validation only. Every error names the file, the line and the key.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib

from .errors import UsageError

DEFAULT_INVENTORY = "inventory.toml"
INVENTORY_ENV = "LABHOP_INVENTORY"


@dataclass(frozen=True)
class HostEntry:
    """One host's settings; ``None`` means "not set here, use the default"."""

    name: str
    hostname: Optional[str] = None
    user: Optional[str] = None
    ssh_port: Optional[int] = None
    identity_file: Optional[str] = None
    jump: tuple[str, ...] = ()
    port: Optional[int] = None
    ip: Optional[str] = None
    root_dir: Optional[str] = None
    prefix: Optional[str] = None
    bin_dir: Optional[str] = None
    python: Optional[str] = None
    public: Optional[bool] = None
    offline: Optional[bool] = None
    # [hosts.NAME.slurm]: what `serve --slurm` asks the scheduler for (labhop.slurm.options.SCHEMA), sorted pairs
    slurm: Optional[tuple[tuple[str, Any], ...]] = None
    kernels: Optional[tuple[str, ...]] = None  # environments / interpreters to offer as kernels
    conda_kernels: Optional[bool] = None  # conda's environments as kernels too (default true)
    packages: Optional[tuple[str, ...]] = None  # extra requirements for labhop's own venv
    login_persist: Optional[str] = None  # how long an SSH login (OpenSSH master) stays up unused


# key -> expected TOML type: the single source of truth for validation.
_SCHEMA: dict[str, type] = {
    "hostname": str,
    "user": str,
    "ssh_port": int,
    "identity_file": str,
    "jump": list,
    "port": int,
    "ip": str,
    "root_dir": str,
    "prefix": str,
    "bin_dir": str,
    "python": str,
    "public": bool,
    "offline": bool,
    "slurm": dict,
    "kernels": list,
    "conda_kernels": bool,
    "packages": list,
    "login_persist": str,
}
assert set(_SCHEMA) == {f.name for f in fields(HostEntry)} - {"name"}

_PORT_KEYS = ("ssh_port", "port")


@dataclass(frozen=True)
class Inventory:
    path: Optional[Path]
    hosts: dict[str, HostEntry] = field(default_factory=dict)
    # [defaults]: applied to every host, and to hosts known only to ssh_config or local runs.
    defaults: HostEntry = field(default_factory=lambda: HostEntry(name=""))
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def get(self, name: str) -> Optional[HostEntry]:
        return self.hosts.get(name)

    def settings_for(self, name: str) -> HostEntry:
        """The host's entry, or the defaults under its name when the inventory does not list it."""
        entry = self.hosts.get(name)
        if entry is not None:
            return entry
        return HostEntry(**{**self.defaults.__dict__, "name": name})

    def expand(self, selector: str) -> list[str]:
        """``@group`` -> its member names; any other name -> itself."""
        if not selector.startswith("@"):
            return [selector]
        group = selector[1:]
        if group not in self.groups:
            where = self.path or DEFAULT_INVENTORY
            raise UsageError(f"{where}: no group {group!r} (known: {', '.join(sorted(self.groups)) or 'none'})")
        return list(self.groups[group])


def inventory_path(cwd: Optional[Path] = None, environ: Optional[Mapping[str, str]] = None) -> Path:
    """The inventory file labhop reads, first match wins (README "Inventory"):

    1. ``$LABHOP_INVENTORY`` (it must exist: see ``current_inventory``);
    2. ``./inventory.toml`` in the current directory;
    3. ``$XDG_CONFIG_HOME/labhop/inventory.toml`` (default ``~/.config/labhop/inventory.toml``), so that
       ``labhop`` finds the user's hosts and groups from any directory.

    When none exists: ./inventory.toml, read as an empty inventory.
    """
    env = os.environ if environ is None else environ
    if env.get(INVENTORY_ENV):
        return Path(env[INVENTORY_ENV]).expanduser()
    here = (cwd or Path.cwd()) / DEFAULT_INVENTORY
    if here.is_file():
        return here
    user = user_inventory(env)
    return user if user.is_file() else here


def user_inventory(environ: Mapping[str, str]) -> Path:
    """The inventory in the user's config directory (XDG base directory spec)."""
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    config = Path(environ["XDG_CONFIG_HOME"]) if environ.get("XDG_CONFIG_HOME") else home / ".config"
    return config / "labhop" / DEFAULT_INVENTORY


def current_inventory(cwd: Optional[Path] = None, environ: Optional[Mapping[str, str]] = None) -> Inventory:
    """The inventory of this run; a ``$LABHOP_INVENTORY`` naming a missing file is an error, not ignored."""
    env = os.environ if environ is None else environ
    return load_inventory(inventory_path(cwd, env), required=bool(env.get(INVENTORY_ENV)))


def load_inventory(path: Path, *, required: bool = False) -> Inventory:
    """Read ``path``; a missing file is an empty inventory unless ``required``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise UsageError(f"{path}: inventory file not found") from None
        return Inventory(path=None)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read inventory: {exc.strerror}") from None
    return parse_inventory(text, path)


def parse_inventory(text: str, path: Path) -> Inventory:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}:{_toml_error_line(exc)}: malformed TOML: {_toml_error_reason(exc)}") from None

    def fail(message: str, table: str, key: Optional[str] = None) -> UsageError:
        line = _line_of(text, table, key)
        return UsageError(f"{path}:{line}: {message}")

    for top in data:
        if top not in ("hosts", "groups", "defaults"):
            raise fail(f"unknown table [{top}] (expected [defaults], [hosts.NAME] or [groups])", top)

    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise fail("[defaults] must be a table", "defaults")
    _validate_settings(defaults, "defaults", fail)

    hosts: dict[str, HostEntry] = {}
    raw_hosts = data.get("hosts", {})
    if not isinstance(raw_hosts, dict):
        raise fail("'hosts' must be a table of [hosts.NAME] tables", "hosts")
    for name, settings in raw_hosts.items():
        table = f"hosts.{name}"
        if not isinstance(settings, dict):
            raise fail(f"host {name!r} must be a table [hosts.{name}]", "hosts", name)
        _validate_settings(settings, table, fail)
        merged = {**defaults, **settings}
        _freeze(merged)
        hosts[name] = HostEntry(name=name, **merged)

    groups: dict[str, tuple[str, ...]] = {}
    raw_groups = data.get("groups", {})
    if not isinstance(raw_groups, dict):
        raise fail("[groups] must be a table of NAME = [hosts]", "groups")
    for gname, members in raw_groups.items():
        if not (isinstance(members, list) and all(isinstance(m, str) for m in members)):
            raise fail(f"group {gname!r} must be a list of host names", "groups", gname)
        groups[gname] = tuple(members)
    base = dict(defaults)
    _freeze(base)
    return Inventory(path=path, hosts=hosts, groups=groups, defaults=HostEntry(name="", **base))


def _validate_settings(settings: dict[str, Any], table: str, fail: Callable[..., UsageError]) -> None:
    for key, value in settings.items():
        if key not in _SCHEMA:
            raise fail(f"unknown key {key!r} in [{table}] (known: {', '.join(sorted(_SCHEMA))})", table, key)
        expected = _SCHEMA[key]
        # bool is an int subclass in Python: never accept true as a port.
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if not ok:
            raise fail(f"{key!r} in [{table}] must be {_type_name(expected)}, got {value!r}", table, key)
        if key in _PORT_KEYS and not 1 <= value <= 65535:
            raise fail(f"{key!r} in [{table}] must be a port number 1-65535, got {value}", table, key)
        if key == "jump" and not all(isinstance(j, str) and j for j in value):
            raise fail(f"'jump' in [{table}] must be a list of host names, outermost first", table, key)
        if key == "kernels" and not all(isinstance(k, str) and k.strip() for k in value):
            raise fail(f"'kernels' in [{table}] must be a list of paths (environments or interpreters)", table, key)
        if key == "packages":
            from .packages import requirement_error

            for item in value:
                problem = requirement_error(item)
                if problem:
                    raise fail(f"'packages' in [{table}]: {problem}", table, key)
        if key == "slurm":
            _validate_slurm(value, f"{table}.slurm", fail)


def _validate_slurm(settings: dict[str, Any], table: str, fail: Any) -> None:
    from .slurm.options import SCHEMA

    for key, value in settings.items():
        if key not in SCHEMA:
            raise fail(f"unknown key {key!r} in [{table}] (known: {', '.join(sorted(SCHEMA))})", table, key)
        expected = SCHEMA[key]
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if key == "sbatch_args":
            ok = ok and all(isinstance(v, str) for v in value)
        if not ok:
            raise fail(f"{key!r} in [{table}] must be {_type_name(expected)}, got {value!r}", table, key)


def _freeze(settings: dict[str, Any]) -> None:
    """Lists and tables as tuples: a HostEntry is frozen."""
    for key in ("jump", "kernels", "packages"):
        if key in settings:
            settings[key] = tuple(settings[key])
    if "slurm" in settings:
        settings["slurm"] = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                         for k, v in settings["slurm"].items()))


def _type_name(t: type) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "a table"}[t]


def _toml_error_line(exc: Exception) -> int:
    line = getattr(exc, "lineno", None)
    if line:
        return int(line)
    match = re.search(r"at line (\d+)", str(exc))
    return int(match.group(1)) if match else 1


def _toml_error_reason(exc: Exception) -> str:
    msg = getattr(exc, "msg", None) or str(exc)
    return re.sub(r"\s*\(at line \d+, column \d+\)", "", msg)


def _line_of(text: str, table: str, key: Optional[str]) -> int:
    """Best-effort line number of ``key`` inside ``[table]`` (or of the table header)."""
    header = re.compile(r"^\s*\[\s*" + r"\s*\.\s*".join(re.escape(p) for p in table.split(".")) + r"\s*\]")
    any_header = re.compile(r"^\s*\[")
    key_re = re.compile(r"^\s*" + re.escape(key) + r"\s*=") if key else None
    lines = text.splitlines()
    in_table = False
    table_line = 1
    for number, line in enumerate(lines, start=1):
        if header.match(line):
            in_table, table_line = True, number
            if key_re is None:
                return number
            continue
        if any_header.match(line):
            in_table = False
        if in_table and key_re is not None and key_re.match(line):
            return number
    # Dotted or inline forms ([hosts] a = {...}): fall back to the first mention.
    if key:
        for number, line in enumerate(lines, start=1):
            if re.search(r"\b" + re.escape(key) + r"\b", line):
                return number
    return table_line
