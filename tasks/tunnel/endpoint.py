"""The JupyterLab a tunnel leads to: where it listens as seen from the target, and whether it
answers through the forward (HTTP, with the token)."""
from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from typing import Optional

from .. import jupyter_config
from ..errors import LabhopError
from ..ssh.openssh import bracket, forward_host
from ..target.probe import HostFacts
from ..invocation import PROGRAM


@dataclass(frozen=True)
class JupyterEnd:
    """What the tunnel forwards to, from the target's server config."""

    host: str  # as seen from the target
    port: int
    scheme: str
    token: Optional[str]
    public: bool

    def url(self, host: str, port: int) -> str:
        base = f"{self.scheme}://{bracket(host)}:{port}/lab"
        return base if self.public or not self.token else f"{base}?token={self.token}"


def jupyter_end(facts: HostFacts, host: str) -> JupyterEnd:
    """The running server's address, port and token, or why there is nothing to tunnel to."""
    stored = jupyter_config.stored_server(facts.config)
    if not facts.config or stored.port is None:
        raise LabhopError(f"no JupyterLab configured on {host} yet: run `{PROGRAM} -H {host} serve` first")
    if not facts.server.alive:
        raise LabhopError(f"JupyterLab is not running on {host} (configured for port {stored.port}): "
                          f"start it with `{PROGRAM} -H {host} serve`")
    return JupyterEnd(host=forward_host(stored.ip), port=stored.port, scheme=stored.scheme, token=stored.token,
                      public=stored.public)


def connect_host(bind: str) -> str:
    """Where to reach a listener bound to ``bind`` from this machine."""
    if bind == "0.0.0.0":
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind


def check_http(end: JupyterEnd, host: str, port: int, *, timeout: float = 15.0,
               host_header: Optional[str] = None) -> tuple[Optional[int], str]:
    """(HTTP status, error text) of the server's API through the forward, with the token.

    ``host_header``: ask as another machine would (its Host header names this machine, not localhost).
    """
    import urllib.error  # here, not at the top: `fab status` loads this module, few runs check a tunnel
    import urllib.request

    path = "/api/status" if not end.public else "/login"
    query = f"?token={end.token}" if end.token and not end.public else ""
    url = f"{end.scheme}://{bracket(host)}:{port}{path}{query}"
    context = ssl._create_unverified_context()  # the target's own (maybe self-signed) cert, via our tunnel
    deadline = time.monotonic() + timeout
    error = ""
    while True:
        try:
            request = urllib.request.Request(url, headers={"Host": host_header} if host_header else {})
            with urllib.request.urlopen(request, timeout=max(1.0, deadline - time.monotonic()),
                                        context=context) as r:
                status: int = r.status
                return status, ""
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except (urllib.error.URLError, OSError, ConnectionError) as exc:
            error = str(getattr(exc, "reason", exc)) or type(exc).__name__
        if time.monotonic() > deadline:
            return None, error
        time.sleep(0.3)
