"""One host's effective settings: CLI flags over inventory over defaults.

Pure: validation of what the user asked for happens here, before any connection.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional, TypeVar

from .errors import UsageError
from .inventory import HostEntry
from .target.layout import DEFAULT_BIN_DIR, DEFAULT_PREFIX

T = TypeVar("T")

DEFAULT_PORT = 8888
LOCALHOST = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"


@dataclass(frozen=True)
class HostSettings:
    prefix: str = DEFAULT_PREFIX
    bin_dir: str = DEFAULT_BIN_DIR
    python: str = "python3"
    port: int = DEFAULT_PORT
    ip: str = LOCALHOST
    root_dir: str = "~"
    public: bool = False
    offline: bool = False
    kernels: tuple[str, ...] = ()  # named environments / interpreters (inventory `kernels`, --kernel)
    conda_kernels: bool = True
    add_ipykernel: tuple[str, ...] = ()  # environments to install ipykernel into (only when asked)
    packages: tuple[str, ...] = ()  # extra requirements for labhop's venv (inventory `packages`, --with)


def parse_port(value: object, where: str) -> int:
    try:
        port = int(str(value))
    except ValueError:
        raise UsageError(f"{where}: {value!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise UsageError(f"{where}: port {port} is out of range 1-65535")
    return port


def resolve_settings(entry: Optional[HostEntry], *, port: Optional[object] = None, ip: Optional[str] = None,
                     root_dir: Optional[str] = None, public: Optional[bool] = None,
                     offline: Optional[bool] = None, kernels: Optional[list[str]] = None,
                     add_ipykernel: Optional[list[str]] = None, packages: Optional[list[str]] = None) -> HostSettings:
    """Merge CLI values (``None`` = not given) over the inventory entry over defaults."""
    e = entry or HostEntry(name="")

    def pick(cli: Optional[T], inv: Optional[T], default: T) -> T:
        return cli if cli is not None else (inv if inv is not None else default)

    is_public = bool(pick(public, e.public, False))
    chosen_port = parse_port(port, "--port") if port is not None else (e.port or DEFAULT_PORT)
    chosen_ip = pick(ip, e.ip, ALL_INTERFACES if is_public else LOCALHOST)
    # Name each value by where it came from: the flag, or the inventory key.
    ip_from = "--ip" if ip is not None else "`ip` in the inventory"
    public_from = "--public" if public else "`public = true` in the inventory"
    try:
        address = ipaddress.ip_address(chosen_ip)
    except ValueError:
        raise UsageError(f"{ip_from}: {chosen_ip!r} is not an IP address") from None
    if not is_public and not address.is_loopback:
        raise UsageError(f"{ip_from} {chosen_ip} listens beyond localhost: that needs --public (and a password)")
    if is_public and address.is_loopback:
        # A password-protected server nobody else can reach is a contradiction, not a safer default.
        raise UsageError(f"{public_from} conflicts with {ip_from} {chosen_ip}: --public listens beyond "
                         f"localhost; drop it for the token variant on localhost, or give a non-loopback --ip")
    return HostSettings(
        prefix=e.prefix or DEFAULT_PREFIX,
        bin_dir=e.bin_dir or DEFAULT_BIN_DIR,
        python=e.python or "python3",
        port=chosen_port,
        ip=chosen_ip,
        root_dir=pick(root_dir, e.root_dir, "~"),
        public=is_public,
        offline=bool(pick(offline, e.offline, False)),
        kernels=_union(e.kernels or (), kernels or ()),
        conda_kernels=bool(pick(None, e.conda_kernels, True)),
        add_ipykernel=_union((), add_ipykernel or ()),
        packages=_union(e.packages or (), _checked(packages or (), "--with")),
    )


def _union(*lists: "tuple[str, ...] | list[str]") -> tuple[str, ...]:
    """Inventory values, then flags: each once, in order (flags add to the inventory's list for this run)."""
    return tuple(dict.fromkeys(item.strip() for items in lists for item in items if item.strip()))


def _checked(requirements: "tuple[str, ...] | list[str]", flag: str) -> "tuple[str, ...] | list[str]":
    from .packages import requirement_error

    for item in requirements:
        problem = requirement_error(item)
        if problem:
            raise UsageError(f"{flag} {item!r}: {problem}")
    return requirements
