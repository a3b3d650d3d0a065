"""Verify every SSH hop's host key against known_hosts, the way OpenSSH does.

Fabric installs paramiko's ``AutoAddPolicy`` and never reads known_hosts: any
key is taken, so whoever sits between the controller and the target gets the
bcrypt hash and a shell. ``secure(connection)`` replaces that policy on the
connection and on every gateway in front of it (inventory jumps and the
``ProxyJump`` hops Fabric builds from ssh_config) with ``VerifyingPolicy``:

* known_hosts files: ssh_config's ``UserKnownHostsFile`` (default
  ``~/.ssh/known_hosts ~/.ssh/known_hosts2``) and ``GlobalKnownHostsFile``
  (default ``/etc/ssh/ssh_known_hosts ...``), with ``%d %u %h %n %p %r %%`` and
  ``~`` expanded; entries hashed (``|1|salt|hash``), with ``[host]:port``,
  wildcards, negations, ``@revoked`` (``@cert-authority`` lines are ignored:
  paramiko does not do host certificates). The name looked up is
  ``HostKeyAlias``, else the host (after ``HostName``) as ``[host]:port`` when
  the port is not 22, as OpenSSH writes it.
* a key that matches: connect. A key of a type that is known for the host but
  is different: refused, always (OpenSSH's ``StrictHostKeyChecking no`` would
  go on with forwarding disabled; labhop needs forwarding and sends secrets).
* an unknown key follows ``StrictHostKeyChecking``: ``yes`` refuses;
  ``accept-new`` and ``no`` record it in the first user file (hashed when
  ``HashKnownHosts yes``); ``ask`` (the default) asks on a terminal like ssh
  does and refuses when there is none (or with ``BatchMode yes``).

The OpenSSH client used for tunnels gets the same files and the same mode via
``openssh_options`` so both agree on what is trusted.

Executor-side: imports paramiko (the pure plan layer never does).
"""
from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import re
import shlex
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from paramiko import MissingHostKeyPolicy, PKey, Transport

from ..errors import LabhopError
from .tcp import PromptTransport, low_latency

DEFAULT_USER_FILES = "~/.ssh/known_hosts ~/.ssh/known_hosts2"
DEFAULT_GLOBAL_FILES = "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"
STRICT_MODES = {"yes": "yes", "accept-new": "accept-new", "no": "no", "off": "no", "ask": "ask"}


class HostKeyError(LabhopError):
    """A host key was refused (exit 1); the message names the host and why."""


# -- known_hosts ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class KnownHost:
    path: str
    line: int
    marker: Optional[str]  # None, "@revoked" or "@cert-authority"
    hosts: str  # the host patterns field as written (maybe hashed)
    key_type: str
    blob: bytes

    def matches(self, name: str) -> bool:
        return host_matches(self.hosts, name)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def parse_known_hosts(text: str, path: str) -> list[KnownHost]:
    """Every usable line; malformed ones are skipped, like ssh skips them."""
    entries: list[KnownHost] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = None
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
        if len(fields) < 3:
            continue
        try:
            blob = base64.b64decode(fields[2], validate=True)
        except ValueError:
            continue
        entries.append(KnownHost(path, number, marker, fields[0], fields[1], blob))
    return entries


def load_known_hosts(paths: Iterable[str]) -> list[KnownHost]:
    entries: list[KnownHost] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:  # missing or unreadable: ssh carries on too
            continue
        entries.extend(parse_known_hosts(text, path))
    return entries


def host_matches(patterns: str, name: str) -> bool:
    """OpenSSH's rules for the first field: a hashed name, or comma-separated patterns
    (``*``/``?`` wildcards, case-insensitive) where a matching ``!negation`` wins."""
    if patterns.startswith("|1|"):
        try:
            _, _, salt, digest = patterns.split("|")
            expected = base64.b64decode(digest)
            actual = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
        except ValueError:
            return False
        return hmac.compare_digest(expected, actual)
    found = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if _wildcard(pattern.lstrip("!")).fullmatch(name.lower()):
            if negated:
                return False
            found = True
    return found


def _wildcard(pattern: str) -> "re.Pattern[str]":
    """ssh's wildcards are ``*`` and ``?`` only (``[`` is literal, as in ``[host]:port``)."""
    return re.compile("".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern.lower()),
                      re.S)


def hashed_name(name: str, salt: Optional[bytes] = None) -> str:
    salt = salt if salt is not None else os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256:... form."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def type_label(key_type: str) -> str:
    if key_type == "ssh-ed25519":
        return "ED25519"
    if key_type.startswith("ecdsa-"):
        return "ECDSA"
    if key_type == "ssh-rsa":
        return "RSA"
    return key_type


# -- the verdict for one offered key -------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    kind: str  # "known", "changed", "revoked", "unknown"
    entry: Optional[KnownHost] = None
    other_types: tuple[str, ...] = ()  # unknown, but keys of these types are known for the host


def judge(entries: Iterable[KnownHost], name: str, key_type: str, blob: bytes) -> Verdict:
    """What known_hosts says about ``name`` offering this key (OpenSSH's precedence)."""
    relevant = [e for e in entries if e.marker != "@cert-authority" and e.matches(name)]
    for entry in relevant:
        if entry.marker == "@revoked" and entry.blob == blob:
            return Verdict("revoked", entry)
    plain = [e for e in relevant if e.marker is None]
    for entry in plain:
        if entry.blob == blob:
            return Verdict("known", entry)
    for entry in plain:
        if entry.key_type == key_type:
            return Verdict("changed", entry)
    return Verdict("unknown", other_types=tuple(sorted({e.key_type for e in plain})))


# -- one hop's settings, from its ssh_config --------------------------------------------------------

@dataclass(frozen=True)
class HostKeyCheck:
    host: str  # what the user calls the hop (for messages)
    name: str  # the name looked up in / written to known_hosts
    strict: str  # yes | accept-new | no | ask
    user_files: tuple[str, ...]
    global_files: tuple[str, ...]
    hash_new: bool = False
    batch: bool = False

    @property
    def label(self) -> str:
        return self.host if self.host == self.name else f"{self.host} ({self.name})"

    @property
    def files(self) -> tuple[str, ...]:
        return self.user_files + self.global_files

    @classmethod
    def from_ssh_config(cls, ssh_config: Mapping[str, Any], *, original_host: str, host: str, port: int,
                        user: str) -> "HostKeyCheck":
        raw_strict = str(ssh_config.get("stricthostkeychecking", "ask")).lower()
        strict = STRICT_MODES.get(raw_strict)
        if strict is None:
            raise LabhopError(f"ssh_config for {original_host}: StrictHostKeyChecking {raw_strict!r} is not one "
                              f"of yes, accept-new, no, ask")
        tokens = {"%d": str(Path("~").expanduser()), "%u": getpass.getuser(), "%h": host,
                  "%n": original_host, "%p": str(port), "%r": user or "", "%%": "%"}

        def files(value: str) -> tuple[str, ...]:
            return tuple(_expand(path, tokens) for path in shlex.split(value) if path.lower() != "none")

        alias = ssh_config.get("hostkeyalias")
        return cls(host=original_host, name=alias or known_hosts_name(host, port), strict=strict,
                   user_files=files(str(ssh_config.get("userknownhostsfile", DEFAULT_USER_FILES))),
                   global_files=files(str(ssh_config.get("globalknownhostsfile", DEFAULT_GLOBAL_FILES))),
                   hash_new=str(ssh_config.get("hashknownhosts", "no")).lower() == "yes",
                   batch=str(ssh_config.get("batchmode", "no")).lower() == "yes")


def _expand(path: str, tokens: Mapping[str, str]) -> str:
    out, i = [], 0
    while i < len(path):
        token = path[i:i + 2]
        if token in tokens:
            out.append(tokens[token])
            i += 2
        else:
            out.append(path[i])
            i += 1
    return os.path.expanduser("".join(out))


def openssh_options(check: HostKeyCheck) -> list[str]:
    """``-o`` options that make an OpenSSH client trust exactly what labhop trusts for this hop.

    ``ask`` becomes ``yes`` for a client that cannot ask (a background tunnel);
    labhop's own connection has asked (and recorded) before any tunnel starts. ``no``
    becomes ``accept-new``: ssh would go on past a CHANGED key, labhop never does.
    """
    strict = {"ask": "yes", "no": "accept-new"}.get(check.strict, check.strict)
    return ["-o", "UserKnownHostsFile=" + " ".join(_ssh_quote(p) for p in check.user_files or ("/dev/null",)),
            "-o", "GlobalKnownHostsFile=" + " ".join(_ssh_quote(p) for p in check.global_files or ("/dev/null",)),
            "-o", f"StrictHostKeyChecking={strict}"]


def _ssh_quote(path: str) -> str:
    return f'"{path}"' if any(ch.isspace() for ch in path) else path


# -- the paramiko side ---------------------------------------------------------------------------

# A fleet run (tasks/fleet.py) connects to its hosts at once: one question, and its answer, at a time.
_ASK_LOCK = threading.Lock()


def _ask_on_terminal(question: str) -> str:
    with _ASK_LOCK:
        sys.stderr.write(question)
        sys.stderr.flush()
        return sys.stdin.readline().strip()


class VerifyingPolicy(MissingHostKeyPolicy):
    """Decides on the key a server offered; paramiko calls it for every key since labhop
    leaves the client's own host-key tables empty (Fabric never fills them)."""

    def __init__(self, check: HostKeyCheck, *, interactive: Optional[bool] = None,
                 ask: Callable[[str], str] = _ask_on_terminal, say: Optional[Callable[[str], None]] = None) -> None:
        self.check = check
        self.interactive = interactive
        self.ask = ask
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self._entries: Optional[list[KnownHost]] = None

    @property
    def entries(self) -> list[KnownHost]:
        if self._entries is None:
            self._entries = load_known_hosts(self.check.files)
        return self._entries

    def missing_host_key(self, client: Any, hostname: str, key: PKey) -> None:
        self.verify(key.get_name(), key.asbytes())

    def verify(self, key_type: str, blob: bytes) -> None:
        check = self.check
        verdict = judge(self.entries, check.name, key_type, blob)
        offered = f"{type_label(key_type)} key {fingerprint(blob)}"
        if verdict.kind == "known":
            return
        if verdict.kind == "revoked":
            raise HostKeyError(f"host key of {check.name} is revoked ({offered}, @revoked in "
                               f"{verdict.entry.where}); refusing to connect")  # type: ignore[union-attr]
        if verdict.kind == "changed":
            entry = verdict.entry
            assert entry is not None
            raise HostKeyError(
                f"host key of {check.name} has CHANGED: it offers {offered}, {entry.where} has "
                f"{fingerprint(entry.blob)}; refusing to connect (someone may be intercepting; if the host was "
                f"reinstalled, check the new key, then `ssh-keygen -R {shlex.quote(check.name)} -f {entry.path}`)")
        others = (f"; known for it: {', '.join(type_label(t) for t in verdict.other_types)}"
                  if verdict.other_types else "")
        if check.strict in ("accept-new", "no"):
            self.record(key_type, blob)
            return
        if check.strict == "ask" and self._can_ask():
            answer = self.ask(f"The authenticity of host '{check.label}' can't be established.\n"
                              f"{offered.replace(' key ', ' key fingerprint is ')}{others}.\n"
                              f"Are you sure you want to continue connecting (yes/no/[fingerprint])? ")
            if answer.lower() == "yes" or answer == fingerprint(blob):
                self.record(key_type, blob)
                return
            raise HostKeyError(f"host key of {check.name} not accepted ({offered})")
        why = ("StrictHostKeyChecking is yes" if check.strict == "yes"
               else "StrictHostKeyChecking is ask and there is no terminal to ask on")
        raise HostKeyError(
            f"host key of {check.name} is unknown ({offered}, not in {' '.join(check.files) or 'any file'}{others}) "
            f"and {why}: check the fingerprint, then `ssh {check.host}` once, or set "
            f"StrictHostKeyChecking accept-new for it in ssh_config")

    def _can_ask(self) -> bool:
        if self.check.batch:
            return False
        if self.interactive is not None:
            return self.interactive
        return sys.stdin.isatty() and sys.stderr.isatty()

    def record(self, key_type: str, blob: bytes) -> None:
        """Append the key to the first user known_hosts file, as ssh does (its directory 0700)."""
        check = self.check
        if not check.user_files or check.user_files[0] == "/dev/null":
            return
        path = Path(check.user_files[0])
        name = hashed_name(check.name) if check.hash_new else check.name
        line = f"{name} {key_type} {base64.b64encode(blob).decode()}\n"
        try:
            if not path.parent.exists():
                path.parent.mkdir(mode=0o700, parents=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            self.say(f"labhop: warning: could not record the host key of {check.label} in {path}: "
                     f"{exc.strerror or exc}")
            return
        self._entries = None
        self.say(f"labhop: permanently added the {type_label(key_type)} host key of {check.label} "
                 f"({fingerprint(blob)}) to {path}")

    def transport_factory(self, sock: Any, **kwargs: Any) -> Transport:
        """A Transport that asks for the key types known for this host first, as ssh orders
        HostKeyAlgorithms, so that a host known by its RSA key is not met with its ED25519 one.
        Tuned for SSH's small messages (tasks/ssh/tcp.py)."""
        transport = PromptTransport(low_latency(sock), **kwargs)
        transport.label = self.check.label
        known = [e.key_type for e in self.entries if e.marker is None and e.matches(self.check.name)]
        if known:
            options = transport.get_security_options()
            wanted: list[str] = []
            for key_type in known:
                wanted.extend(["rsa-sha2-512", "rsa-sha2-256", key_type] if key_type == "ssh-rsa" else [key_type])
            first = [t for t in dict.fromkeys(wanted) if t in options.key_types]
            options.key_types = first + [t for t in options.key_types if t not in first]
        return transport


def check_for(cxn: Any) -> HostKeyCheck:
    return HostKeyCheck.from_ssh_config(cxn.ssh_config, original_host=cxn.original_host, host=cxn.host,
                                        port=int(cxn.port), user=cxn.user)


def secure(cxn: Any) -> Any:
    """Put ``VerifyingPolicy`` on a Fabric Connection and every Connection gateway in front of it.

    A ProxyCommand gateway is a process of its own (usually ssh, which checks its hop itself).
    """
    hop = cxn
    seen: set[int] = set()
    while hop is not None and not isinstance(hop, str) and id(hop) not in seen and hasattr(hop, "client"):
        seen.add(id(hop))
        policy = VerifyingPolicy(check_for(hop))
        hop.client.set_missing_host_key_policy(policy)
        # A new dict: Fabric may share connect_kwargs with the config and other Connections.
        hop.connect_kwargs = {**hop.connect_kwargs, "transport_factory": policy.transport_factory}
        hop = hop.gateway or None
    return cxn
