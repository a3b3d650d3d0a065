"""`serve`'s decisions, pure: which settings stick, which port, whether a running server may restart.

A setting this run does not give (no flag, nothing in the inventory) is not a change: it keeps what
the target's config says, so re-running the quick start after ``serve --port 8890`` leaves the server
on 8890. When no port is named anywhere, the first free one from the remembered port (or 8888) up is
used and written to the config, where the next run finds it again.

A running server with live kernels is never restarted silently: ``restart_refusal`` names what would
change and how many kernels would be lost, and ``serve`` does it only with ``--restart``.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Optional

from . import jupyter_config
from .settings import DEFAULT_PORT, HostSettings
from .target.probe import HostFacts

# How far above the wanted port the probe looks for a free one (a shared login node).
PORT_SCAN = 100


@dataclass(frozen=True)
class Given:
    """Which server settings this run names, by a flag or in the inventory."""

    port: bool = False
    ip: bool = False
    root_dir: bool = False
    public: bool = False


@dataclass(frozen=True)
class Stored:
    """The server settings in the config labhop last wrote on the target."""

    port: Optional[int]
    ip: Optional[str]
    root_dir: Optional[str]
    public: bool
    https: bool


def stored_server(config_text: Optional[str]) -> Optional[Stored]:
    if not config_text:
        return None
    values = jupyter_config.read_settings(config_text)

    def text(name: str) -> Optional[str]:
        raw = values.get(name)
        return raw[1:-1] if raw and len(raw) >= 2 and raw[0] in "'\"" else None

    return Stored(port=jupyter_config.stored_port(config_text), ip=text("ServerApp.ip"),
                  root_dir=text("ServerApp.root_dir"), public="ServerApp.identity_provider_class" in values,
                  https="ServerApp.certfile" in values)


@dataclass(frozen=True)
class Choice:
    """The settings this serve uses, and what to tell the user about them."""

    settings: HostSettings
    notes: list[str] = field(default_factory=list)
    # The public variant kept without --public: its stored password hash (and TLS mode) stay.
    kept_public: bool = False
    kept_https: bool = False


def choose_settings(settings: HostSettings, given: Given, facts: HostFacts) -> Choice:
    """``settings`` (flags over inventory over defaults) with what was not given taken from the target."""
    stored = stored_server(facts.config)
    notes: list[str] = []
    chosen = settings
    kept_public = False
    if stored is not None:
        explicit_localhost = given.ip and is_loopback(settings.ip)
        if stored.public and not settings.public and not given.public and not explicit_localhost:
            kept_public = True
            chosen = replace(chosen, public=True, ip=stored.ip if stored.ip and not given.ip else chosen.ip)
        elif stored.ip and not given.ip and not given.public and stored.public == chosen.public:
            chosen = replace(chosen, ip=stored.ip)
        if stored.root_dir and not given.root_dir:
            chosen = replace(chosen, root_dir=stored.root_dir)
    if not given.port:
        remembered = stored.port if stored is not None and stored.port else None
        if facts.server.alive and remembered:
            chosen = replace(chosen, port=remembered)
        elif facts.free_port is not None:
            wanted = remembered or DEFAULT_PORT
            chosen = replace(chosen, port=facts.free_port)
            if facts.free_port != wanted:
                notes.append(f"port {wanted} is busy on the target; using {facts.free_port}, the next free one "
                             f"(kept for later runs; --port names another)")
        elif remembered:
            chosen = replace(chosen, port=remembered)
    return Choice(chosen, notes, kept_public=kept_public, kept_https=kept_public and bool(stored and stored.https))


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


# Settings whose values may be shown (never the token or the password hash).
_SHOWN = {"ServerApp.ip": "address", "ServerApp.port": "port", "ServerApp.root_dir": "root dir"}


def config_changes(old: Optional[str], new: str) -> list[str]:
    """What differs between two configs labhop wrote, in words; secrets are named, never shown."""
    before, after = jupyter_config.read_settings(old), jupyter_config.read_settings(new)
    changes = []
    for name, label in _SHOWN.items():
        if before.get(name) != after.get(name):
            changes.append(f"{label} {_plain(before.get(name))} -> {_plain(after.get(name))}")
    was_public, public = "ServerApp.identity_provider_class" in before, "ServerApp.identity_provider_class" in after
    if was_public != public:
        changes.append(f"variant {'public' if was_public else 'localhost'} -> {'public' if public else 'localhost'}")
    elif "ServerApp.certfile" in before or "ServerApp.certfile" in after:
        if before.get("ServerApp.certfile") != after.get("ServerApp.certfile"):
            changes.append("TLS on" if "ServerApp.certfile" in after else "TLS off")
    shown = set(_SHOWN) | {"ServerApp.identity_provider_class", "ServerApp.certfile", "ServerApp.keyfile"}
    if not changes and any(before.get(k) != after.get(k) for k in set(before) | set(after) if k not in shown):
        changes.append("other settings (token, password or options)")
    return changes


def _plain(raw: Optional[str]) -> str:
    if raw is None:
        return "(none)"
    return raw[1:-1] if len(raw) >= 2 and raw[0] in "'\"" else raw


def restart_refusal(facts: HostFacts, new_config: str, *, files_changed: bool, restart: bool) -> Optional[str]:
    """Why a restart this serve would do must not happen silently; None when it may go ahead."""
    kernels = facts.server.kernels or 0
    if restart or not facts.server.alive or kernels == 0:
        return None
    changes = config_changes(facts.config, new_config) if new_config != facts.config else []
    if files_changed:
        changes.append("its TLS certificate")
    if not changes:
        return None
    lost = f"{kernels} running kernel{'s' if kernels != 1 else ''}"
    return (f"serve would restart JupyterLab (pid {facts.server.pid}) to change {', '.join(changes)}, and its {lost} "
            f"would be lost; nothing was changed: add --restart to do it")
