"""From what Fabric hands a task (a Context, or a Connection for ``-H NAME``) to a target.

``-H NAME`` finds NAME in inventory.toml first (hostname, user, ssh_port,
identity_file, jump), else leaves it to ssh_config (Fabric already read it,
including the file given with ``-S``), ProxyJump included.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from fabric import Connection
from paramiko import ChannelException

from ..errors import LabhopError, UsageError
from .faults import describe_connection_error
from .hostkeys import check_for, openssh_options, secure  # every hop's host key checked against known_hosts
from .sshconfig import ssh_reads_what_fabric_reads
from ..inventory import HostEntry, Inventory

if TYPE_CHECKING:
    from .master import Masters
    from .openssh import Chain

LOCAL = "local"


@dataclass
class Target:
    name: str  # what the user typed (-H NAME), or "local"
    c: Any  # invoke Context or fabric Connection
    entry: HostEntry
    address: str  # the host name to put in URLs for the public variant
    # id(Connection) -> the name the user knows a hop by (inventory name / ssh_config alias)
    hop_names: dict[int, str] = field(default_factory=dict)
    # The hops' OpenSSH masters when commands ride them (tasks/ssh/master.py); None: paramiko.
    masters: Optional[Masters] = None

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
    names: dict[int, str] = {}
    cxn = secure(connection_for(name, inventory, c.config, seen=(), names=names))
    return Target(name=name, c=cxn, entry=entry, address=cxn.host, hop_names=names)


def connection_for(name: str, inventory: Inventory, config: Any, seen: tuple[str, ...],
                   names: Optional[dict[int, str]] = None) -> Connection:
    """A Connection for an inventory name or ssh_config alias, with its jump chain as gateways."""
    if name in seen:
        raise UsageError(f"jump hosts loop: {' -> '.join([*seen, name])}")
    entry: Optional[HostEntry] = inventory.get(name)
    names = {} if names is None else names
    if entry is None:  # an ssh_config alias (its own ProxyJump applies)
        alias_cxn = Connection(name, config=config.clone())
        names[id(alias_cxn)] = name
        return alias_cxn
    gateway: Optional[Connection] = None
    for hop in entry.jump:
        hop_cxn = connection_for(hop, inventory, config, seen=(*seen, name), names=names)
        if gateway is not None and hop_cxn.gateway is None:
            hop_cxn.gateway = gateway
        gateway = hop_cxn
    # A clone per hop: Fabric writes a host's ssh_config IdentityFile into the config's own
    # connect_kwargs, which would hand one hop's key to every later hop (and to ssh -i).
    kwargs: dict[str, Any] = {"config": config.clone()}
    if entry.user:
        kwargs["user"] = entry.user
    if entry.ssh_port:
        kwargs["port"] = entry.ssh_port
    if entry.identity_file:
        kwargs["connect_kwargs"] = {"key_filename": [entry.identity_file]}
    if gateway is not None:
        kwargs["gateway"] = gateway
    cxn = Connection(entry.hostname or name, **kwargs)
    names[id(cxn)] = name
    return cxn


# -- the chain of hops: one list for Fabric's connections and for the OpenSSH client ------------

def chain_of(target: Target) -> list[tuple[str, Connection]]:
    """(name, Connection) for every hop, outermost jump host first, the target last."""
    if target.is_local:
        return []
    chain: list[tuple[str, Connection]] = []
    cxn: Any = target.c
    while isinstance(cxn, Connection):
        name = target.name if cxn is target.c else target.hop_names.get(id(cxn), cxn.original_host)
        chain.append((name, cxn))
        cxn = cxn.gateway
    return list(reversed(chain))


def ssh_chain(target: Target) -> Chain:
    """The same hops, users, ports, keys and ssh_config file as Fabric's, for the system ssh."""
    from .openssh import Chain, Hop  # the OpenSSH side: tunnels, and naming a hop in an error

    config_file = getattr(target.c.config, "_runtime_ssh_path", None)
    same_files = ssh_reads_what_fabric_reads(config_file)  # else ssh is told everything Fabric found
    hops: list[Hop] = []
    connections = chain_of(target)
    for index, (name, cxn) in enumerate(connections):
        keys = cxn.connect_kwargs.get("key_filename") or []
        proxy = cxn.gateway if index == 0 and isinstance(cxn.gateway, str) else None
        check = check_for(cxn)
        hops.append(Hop(
            name=name, alias=cxn.original_host, hostname=cxn.host, user=cxn.user, port=int(cxn.port),
            identity_files=tuple([keys] if isinstance(keys, str) else keys),
            connect_timeout=cxn.connect_timeout,
            host_key_options=tuple(openssh_options(check)),
            proxy_command=proxy, host_key_mode=check.strict, batch_mode=check.batch,
            from_config=from_config(cxn) if same_files else frozenset(),
            config_identity_files=tuple(cxn.ssh_config.get("identityfile") or ()) if same_files else ()))
    return Chain(hops=tuple(hops), config_file=config_file)


def from_config(cxn: Connection) -> frozenset[str]:
    """Which of host name, user and port ssh_config gives as Fabric used them (an inventory entry or
    ``-H user@host:port`` names them itself): ssh reads those from the same file, Match blocks and all."""
    config = cxn.ssh_config
    found = set()
    if cxn.host == config.get("hostname", cxn.original_host):
        found.add("hostname")
    if cxn.user == config.get("user", _login_name()):
        found.add("user")
    if int(cxn.port) == int(config.get("port", 22)):
        found.add("port")
    return frozenset(found)


def _login_name() -> Optional[str]:
    """The account name ssh uses when nothing names a user (the passwd entry, not $USER as Fabric)."""
    try:
        import pwd
    except ImportError:  # Windows: no OpenSSH connection sharing there anyway
        return None
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return None


def quiet_paramiko_log() -> None:
    """paramiko logs a refused channel ("Secsh channel 0 open FAILED") on stderr through logging's
    last-resort handler; labhop reports it as one line naming the hop instead (open_chain)."""
    log = logging.getLogger("paramiko")
    if not any(isinstance(handler, logging.NullHandler) for handler in log.handlers):
        log.addHandler(logging.NullHandler())


_fallback_said = threading.Lock()


def use_openssh(target: Target) -> None:
    """Put the target's commands on OpenSSH masters (one login per hop, shared by every run),
    or leave them on paramiko where connection sharing is not available, saying so once."""
    from .master import Masters, transport_available
    from .runner import share

    why = transport_available()
    if why is not None:
        from .sessions import sessions

        if _fallback_said.acquire(blocking=False):
            print(f"labhop: SSH through paramiko, a new login per run ({why})", file=sys.stderr, flush=True)
        target.c = sessions(target.c, target.name)  # a target allowing one session per connection
        return
    target.masters = Masters(ssh_chain(target), persist=target.entry.login_persist)
    target.c = share(target.c, target.masters)


def open_chain(target: Target) -> None:
    """Connect hop by hop, outermost first, so that a failure names the hop it happened at."""
    if target.masters is not None:
        target.masters.ensure()
        return
    quiet_paramiko_log()
    connections = chain_of(target)
    for index, (_name, cxn) in enumerate(connections):
        try:
            cxn.open()
        except Exception as exc:  # paramiko/socket faults: one line that says where
            from .openssh import hop_title

            chain = ssh_chain(target)
            reason = describe_connection_error(exc)
            if index > 0 and isinstance(exc, ChannelException):
                raise LabhopError(f"{connections[index - 1][0]} cannot reach {hop_title(chain, index)}: "
                                  f"{_channel_reason(exc)}") from None
            error = UsageError if _unknown_name(exc) else LabhopError
            raise error(f"{hop_title(chain, index)}: {reason}") from None


def close_chain(target: Target) -> None:
    """Close the target's connection, then each jump host's, innermost first (OpenSSH masters
    stay up for the next run: ``fab logout`` closes them)."""
    for _name, cxn in reversed(chain_of(target)):
        cxn.close()


def _unknown_name(exc: BaseException) -> bool:
    """DNS says the name does not exist (not a temporary failure): a typo, so a usage error (exit 2)."""
    permanent = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
    return isinstance(exc, socket.gaierror) and exc.errno in permanent


def _channel_reason(exc: BaseException) -> str:
    text = getattr(exc, "text", None) or str(exc)
    return f"the jump host's sshd could not connect ({text})"
