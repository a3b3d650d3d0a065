"""The system OpenSSH client's argv for a chain of hops, built from what Fabric resolved.

Pure: no fabric / invoke / paramiko import. ``connect.ssh_chain`` reads the Fabric
connections (host, user, port, keys, gateways) into a ``Chain``; this module turns it
into one ``ssh`` command whose jump hosts are nested ``ProxyCommand``s, so that every
hop keeps its own user, port and key (``ssh -J`` cannot carry a per-hop ``-i``) and
``-F FILE`` (``fab -S FILE``) applies at every level.

Each level of ``ssh`` expands ``%`` tokens in its ``ProxyCommand`` once; an inner
command is therefore ``%``-escaped for every level it passes through, except the
``-W [%h]:%p`` that the level below must fill in.
"""
from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass
from typing import Optional

SSH = "ssh"
ALIVE_INTERVAL = 15  # seconds between keep-alives: a dead path is noticed within ~45 s
ALIVE_COUNT = 3


@dataclass(frozen=True)
class Hop:
    """One SSH server on the way, as Fabric would connect to it."""

    name: str  # what the user calls it (inventory name, ssh_config alias, -H value)
    alias: str  # the name looked up in ssh_config (Fabric's Connection.original_host)
    hostname: str  # the address actually connected to (after HostName)
    user: str
    port: int = 22
    identity_files: tuple[str, ...] = ()
    connect_timeout: Optional[int] = None
    # -o options that make ssh trust exactly the host keys labhop's own connection
    # trusts (known_hosts files, StrictHostKeyChecking): see hostkeys.openssh_options.
    host_key_options: tuple[str, ...] = ()
    # A ProxyCommand from ssh_config in front of this hop (only for the outermost hop).
    proxy_command: Optional[str] = None
    # StrictHostKeyChecking as ssh_config says (host_key_options has what a client that cannot ask uses),
    # and BatchMode yes there: a login on a terminal asks about a new key only for "ask" without BatchMode.
    host_key_mode: str = "yes"
    batch_mode: bool = False
    # What ssh finds in the same ssh_config itself ("hostname", "user", "port"; keys its IdentityFile
    # names), so it is not repeated on ssh's command line: a HostName given there would change what the
    # config's `Match host`/`Match exec "... %h"` blocks see (and lose what they set, a CertificateFile).
    from_config: frozenset[str] = frozenset()
    config_identity_files: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{self.user}@{host}:{self.port}"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.address})"


@dataclass(frozen=True)
class Chain:
    """Jump hosts outermost first, then the target (the last hop)."""

    hops: tuple[Hop, ...]
    config_file: Optional[str] = None  # fab -S FILE: the one ssh_config both clients read

    @property
    def target(self) -> Hop:
        return self.hops[-1]

    @property
    def jumps(self) -> tuple[Hop, ...]:
        return self.hops[:-1]

    def describe(self) -> str:
        return " -> ".join(["this machine", *(h.name for h in self.hops)])


@dataclass(frozen=True)
class LocalForward:
    """``-L bind:port:host:host_port``: a port here reaching host:host_port as seen from the target."""

    bind: str
    port: int
    host: str
    host_port: int

    def spec(self) -> str:
        return f"{bracket(self.bind)}:{self.port}:{bracket(self.host)}:{self.host_port}"


@dataclass(frozen=True)
class RemoteForward:
    """``-R port:host:host_port``: a loopback port on the target reaching host:host_port here."""

    port: int
    host: str
    host_port: int

    def spec(self) -> str:
        return f"{self.port}:{bracket(self.host)}:{self.host_port}"


@dataclass(frozen=True)
class Forwards:
    local: tuple[LocalForward, ...] = ()
    remote: tuple[RemoteForward, ...] = ()


def bracket(host: str) -> str:
    """An IPv6 address in brackets (for host:port, in URLs too); a name or IPv4 address as it is."""
    return f"[{host}]" if ":" in host else host


def _escape(text: str) -> str:
    """Literal text inside a ProxyCommand (or HostName) that ssh must not %-expand."""
    return text.replace("%", "%%")


def hop_options(hop: Hop, chain: Chain, proxy: str) -> list[str]:
    """Everything that makes ``ssh`` reach ``hop`` exactly as Fabric does."""
    argv: list[str] = []
    if chain.config_file:
        argv += ["-F", chain.config_file]
    if "user" not in hop.from_config:
        argv += ["-l", hop.user]
    if "port" not in hop.from_config:
        argv += ["-p", str(hop.port)]
    if "hostname" not in hop.from_config:
        argv += ["-o", f"HostName={_escape(hop.hostname)}"]
    for key in dict.fromkeys(hop.identity_files):  # de-duplicated, order kept
        if key not in hop.config_identity_files:
            argv += ["-i", key]
    argv += ["-o", "BatchMode=yes"]  # never a password prompt from a background process
    # ssh's own messages are how a failure is told (diagnose, master.login_failure): not silenced by a
    # LogLevel QUIET in ssh_config, nor buried under DEBUG lines nobody sees here.
    argv += ["-o", "LogLevel=INFO"]
    if hop.connect_timeout:
        argv += ["-o", f"ConnectTimeout={int(hop.connect_timeout)}"]
    argv += list(hop.host_key_options)
    argv += ["-o", f"ProxyCommand={proxy}"]
    return argv


def proxy_for(chain: Chain, index: int) -> str:
    """The ProxyCommand value for hop ``index``: the hop before it, or how Fabric reached hop 0."""
    if index == 0:
        first = chain.hops[0]
        # "none": Fabric connected directly, so OpenSSH must not pick up a ProxyJump of its own.
        return _escape(first.proxy_command) if first.proxy_command else "none"
    return jump_command(chain, index - 1)


def jump_command(chain: Chain, index: int) -> str:
    """A shell command that connects stdin/stdout to the next hop through hop ``index`` (``ssh -W``)."""
    hop = chain.hops[index]
    argv = [SSH, *hop_options(hop, chain, proxy_for(chain, index)), "-W", "[%h]:%p", hop.alias]
    words = [shlex.quote(word) if word == "[%h]:%p" else _escape(shlex.quote(word)) for word in argv]
    return " ".join(words)


def forward_options(forwards: Forwards) -> list[str]:
    """``-L``/``-R`` options for the forwards (for a tunnel's own ssh, or ``-O forward`` to a master)."""
    argv: list[str] = []
    for fwd in forwards.local:
        argv += ["-L", fwd.spec()]
    for rfwd in forwards.remote:
        argv += ["-R", rfwd.spec()]
    return argv


def tunnel_argv(chain: Chain, forwards: Forwards, *, ssh: str = SSH) -> list[str]:
    """``ssh -N`` holding the forwards open through the whole chain; fails fast when a forward cannot be set up."""
    if not forwards.local and not forwards.remote:
        raise ValueError("a tunnel needs at least one forward")
    target_index = len(chain.hops) - 1
    argv = [ssh, "-N", "-T", "-n",
            "-o", "ExitOnForwardFailure=yes",
            "-o", f"ServerAliveInterval={ALIVE_INTERVAL}",
            "-o", f"ServerAliveCountMax={ALIVE_COUNT}",
            # Our own connection: a ControlMaster from the user's config would make this
            # process a mux client (wrong pid to close) or keep forwards in someone else's master.
            "-o", "ControlMaster=no", "-o", "ControlPath=none"]
    argv += forward_options(forwards)
    argv += hop_options(chain.target, chain, proxy_for(chain, target_index))
    argv.append(chain.target.alias)
    return argv


def forward_host(ip: str) -> str:
    """Where the target's server is reached from the target itself."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "::1"
    return ip


# -- naming the hop when the OpenSSH client fails ---------------------------------------------

@dataclass(frozen=True)
class SshFailure:
    """Why an ``ssh`` run failed, as the one line to show (``str()``). Callers that act on the
    kind of failure test the subclass, never the words."""

    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class LocalPortBusy(SshFailure):
    """ssh could not listen on the local end of ``-L`` (another program took the port)."""

    port: int = 0


@dataclass(frozen=True)
class AuthRefused(SshFailure):
    """A hop's sshd refused every key offered."""

    hop: Optional[int] = None  # index into Chain.hops, when the host could be matched


@dataclass(frozen=True)
class HopUnreachable(SshFailure):
    """A hop could not be reached (refused, no route, timed out, name not resolved)."""

    hop: Optional[int] = None


_CONNECT = re.compile(r"ssh: connect to host (\S+) port (\d+): (.+)")
_RESOLVE = re.compile(r"ssh: Could not resolve hostname (\S+?):? (.+)")
_DENIED = re.compile(r"(\S+)@(\S+?): Permission denied \((.*)\)")
_HOSTKEY = re.compile(r"(?:host key is known for|Host key for) (\S+?)(?: and| has changed|\s|$)")
_BIND = re.compile(r"bind \[?([^\]\s]*)\]?:(\d+): (.+)")
_REMOTE_FAIL = re.compile(r"remote port forwarding failed for listen port (\d+)")
_OPEN_FAILED = re.compile(r"open failed: (?:connect failed|administratively prohibited): ?(.*)")


def _find_hop(chain: Chain, host: str, port: Optional[int] = None) -> Optional[int]:
    host = host.strip("[]")
    for i, hop in enumerate(chain.hops):
        if host in (hop.hostname, hop.alias, hop.name) and (port is None or port == hop.port):
            return i
    for i, hop in enumerate(chain.hops):  # port differs (e.g. a known_hosts form): host alone
        if host in (hop.hostname, hop.alias, hop.name):
            return i
    return None


def hop_title(chain: Chain, index: int) -> str:
    hop = chain.hops[index]
    if index == len(chain.hops) - 1:
        return f"target {hop.label}"
    return f"jump host {index + 1} of {len(chain.jumps)} {hop.label}"


# ssh's words (strerror) for a connection that never got through to a hop.
_NOT_REACHED = ("connection refused", "no route", "network is unreachable", "connection timed out")


def diagnose(stderr: str, chain: Chain) -> SshFailure:
    """What an ``ssh`` run failed at, read from its stderr (the only account OpenSSH gives)."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    text = "\n".join(lines)

    def at(host: str, port: Optional[int], what: str) -> str:
        index = _find_hop(chain, host, port)
        if index is None:
            return f"{host}{':' + str(port) if port else ''}: {what}"
        if index > 0 and what.lower().startswith(_NOT_REACHED):
            # Only the previous hop connects there: say who could not reach whom.
            return f"{chain.hops[index - 1].name} cannot reach {hop_title(chain, index)}: {what}"
        return f"{hop_title(chain, index)}: {what}"

    for line in lines:
        m = _BIND.search(line)
        if m:
            return LocalPortBusy(f"local port {m.group(2)} on {m.group(1) or 'all addresses'} is busy here: "
                                 f"{m.group(3)}", port=int(m.group(2)))
        m = _REMOTE_FAIL.search(line)
        if m:
            return SshFailure(f"{hop_title(chain, len(chain.hops) - 1)}: the server refused to listen on its port "
                              f"{m.group(1)} for the reverse forward (taken meanwhile, or AllowTcpForwarding off)")
    for line in lines:
        m = _DENIED.search(line)
        if m:
            return AuthRefused(at(m.group(2), None, f"SSH key refused (Permission denied ({m.group(3)}))"),
                               hop=_find_hop(chain, m.group(2)))
        m = _CONNECT.search(line)
        if m:
            what = m.group(3)
            message = at(m.group(1), int(m.group(2)), what)
            if what.lower().startswith(_NOT_REACHED):
                return HopUnreachable(message, hop=_find_hop(chain, m.group(1), int(m.group(2))))
            return SshFailure(message)
        m = _RESOLVE.search(line)
        if m:
            return HopUnreachable(at(m.group(1), None, f"cannot resolve host name ({m.group(2)})"),
                                  hop=_find_hop(chain, m.group(1)))
        m = _HOSTKEY.search(line)
        if m:
            host, _, port = m.group(1).strip("[]").partition("]:")
            what = "host key changed" if "changed" in line else "host key unknown and strict checking is on"
            return SshFailure(at(host, int(port) if port.isdigit() else None,
                                 f"{what} (Host key verification failed)"))
    if "stdio forwarding failed" in text:
        # A jump host's sshd could not open the next leg; its message does not say which one.
        m = _OPEN_FAILED.search(text)
        detail = (m.group(1) if m else "") or "connect failed"
        return HopUnreachable(f"a jump host could not connect to the next hop on {chain.describe()}: {detail}")
    if "Host key verification failed" in text:
        return SshFailure("host key verification failed on the way to " + chain.target.label)
    tail = " | ".join(lines[-3:]) if lines else "ssh exited without a message"
    return SshFailure(f"ssh to {chain.target.label} failed: {tail}")


def explain_failure(stderr: str, chain: Chain) -> str:
    """One line naming the hop (or the step) an ``ssh`` run failed at, from its stderr."""
    return diagnose(stderr, chain).message


def forward_failure(stderr: str) -> Optional[str]:
    """The reason a forwarded connection could not be opened on the far side, if ssh logged one."""
    matches = list(_OPEN_FAILED.finditer(stderr or ""))
    return (matches[-1].group(1) or "connect failed") if matches else None

