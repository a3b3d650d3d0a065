"""From what Fabric hands a task (a Context, or a Connection for ``-H NAME``) to a target.

``-H NAME`` finds NAME in inventory.toml first (hostname, user, ssh_port,
identity_file, jump), else leaves it to ssh_config (Fabric already read it,
including the file given with ``-S``), ProxyJump included.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from fabric import Connection

from .errors import UsageError
from .hostkeys import secure  # every hop's host key checked against known_hosts
from .inventory import HostEntry, Inventory

LOCAL = "local"


@dataclass
class Target:
    name: str  # what the user typed (-H NAME), or "local"
    c: Any  # invoke Context or fabric Connection
    entry: HostEntry
    address: str  # the host name to put in URLs for the public variant

    @property
    def is_local(self) -> bool:
        return not isinstance(self.c, Connection)


def resolve_target(c: Any, inventory: Inventory) -> Target:
    if not isinstance(c, Connection):
        entry = inventory.settings_for(LOCAL)
        return Target(name=LOCAL, c=c, entry=entry, address="127.0.0.1")
    name = c.original_host
    entry = inventory.settings_for(name)
    if inventory.get(name) is None:
        return Target(name=name, c=secure(c), entry=entry, address=c.host)
    cxn = secure(connection_for(name, inventory, c.config, seen=()))
    return Target(name=name, c=cxn, entry=entry, address=cxn.host)


def connection_for(name: str, inventory: Inventory, config: Any, seen: tuple[str, ...]) -> Connection:
    """A Connection for an inventory name or ssh_config alias, with its jump chain as gateways."""
    if name in seen:
        raise UsageError(f"jump hosts loop: {' -> '.join([*seen, name])}")
    entry: Optional[HostEntry] = inventory.get(name)
    if entry is None:  # an ssh_config alias (its own ProxyJump applies)
        return Connection(name, config=config)
    gateway: Optional[Connection] = None
    for hop in entry.jump:
        hop_cxn = connection_for(hop, inventory, config, seen=(*seen, name))
        if gateway is not None and hop_cxn.gateway is None:
            hop_cxn.gateway = gateway
        gateway = hop_cxn
    kwargs: dict[str, Any] = {"config": config}
    if entry.user:
        kwargs["user"] = entry.user
    if entry.ssh_port:
        kwargs["port"] = entry.ssh_port
    if entry.identity_file:
        kwargs["connect_kwargs"] = {"key_filename": [entry.identity_file]}
    if gateway is not None:
        kwargs["gateway"] = gateway
    return Connection(entry.hostname or name, **kwargs)
