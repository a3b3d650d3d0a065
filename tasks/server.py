"""The server's identity as seen from the controller: credentials, URL, status."""
from __future__ import annotations

import datetime
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Optional

from . import jupyter_config
from .errors import LabhopError
from .passwords import hash_for
from .target.probe import HostFacts
from .invocation import PROGRAM


def token_for(facts: HostFacts) -> str:
    """Keep the token already in the config (so re-runs change nothing), else a fresh one."""
    return jupyter_config.stored_secrets(facts.config).token or secrets.token_hex(24)


def hashed_password_for(facts: HostFacts, password: str) -> str:
    return hash_for(password, jupyter_config.stored_secrets(facts.config).hashed_password)


@dataclass(frozen=True)
class Status:
    host: str
    running: bool
    pid: Optional[int]
    port: Optional[int]
    variant: Optional[str]
    url: Optional[str]
    since: Optional[str]
    # The pid in a pid file whose process is gone: JupyterLab died behind labhop's back.
    stale_pid: Optional[int] = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def url_for(config_text: Optional[str], address: str, *, local_port: Optional[int] = None) -> Optional[str]:
    """The URL to open: the token in it for the localhost variant, none for the public one."""
    stored = jupyter_config.stored_server(config_text)
    if stored.port is None:
        return None
    if stored.public:
        return f"{stored.scheme}://{address}:{stored.port}/lab"
    return f"{stored.scheme}://127.0.0.1:{local_port or stored.port}/lab?token={stored.token}"


def status_of(host: str, facts: HostFacts, address: str, *, local_port: Optional[int] = None) -> Status:
    variant = jupyter_config.stored_server(facts.config).variant if facts.config else None
    since = None
    if facts.server.alive and facts.server.since:
        started = datetime.datetime.fromtimestamp(facts.server.since, tz=datetime.timezone.utc)
        since = started.isoformat(timespec="seconds")
    return Status(host=host, running=facts.server.alive, pid=facts.server.pid if facts.server.alive else None,
                  port=jupyter_config.stored_port(facts.config), variant=variant,
                  url=url_for(facts.config, address, local_port=local_port) if facts.server.alive else None,
                  since=since,
                  stale_pid=facts.server.pid if not facts.server.alive else None)


def status_lines(st: Status) -> list[str]:
    """What `status` says about the server (tunnels are listed after it)."""
    if st.running:
        return [f"running: pid {st.pid}, port {st.port}, {st.variant}, since {st.since}", f"open: {st.url}"]
    if st.stale_pid:
        return [f"not running: JupyterLab (pid {st.stale_pid}) died unexpectedly, its pid file is stale; "
                f"`{PROGRAM} serve` starts it again, `{PROGRAM} logs` shows its last lines"]
    return ["not running"]


def url_or_why(facts: HostFacts, address: str, *, local_port: Optional[int] = None) -> str:
    """The URL to open; a LabhopError (exit 1) when there is no server to open, naming the URL it had.
    ``local_port``: an open tunnel's port here, when it is not the server's."""
    found = url_for(facts.config, address, local_port=local_port)
    if not found:
        raise LabhopError(f"no server configured here yet: run `{PROGRAM} serve` first")
    if not facts.server.alive:
        raise LabhopError(f"JupyterLab is not running (it was at {found}): `{PROGRAM} serve` starts it again")
    return found
