"""One authenticated OpenSSH master connection per hop, shared by everything labhop does.

Each hop of a chain (jump hosts outermost first, then the target) gets an ``ssh`` master
(``ControlMaster``/``ControlPersist``) listening on a control socket; a hop behind a jump
host connects through the jump host's master (``ProxyCommand ssh -S <jump socket> -W``),
so the masters chain like the hops and a fleet behind one bastion logs in to it once.
Commands, uploads and forwards are mux clients of the target's master (``runner.py``).

The first login to a hop is OpenSSH's own: on the user's terminal or ``SSH_ASKPASS``
(second factors, host keys to ask about), one hop at a time under a lock file, so a fleet
never prompts in parallel. Without a terminal and without askpass, masters are started
with ``BatchMode=yes``: a hop that wants more than a key fails at once and is named
(``LoginNeeded``). A master the user already runs (``ssh -G`` gives its ControlPath) is
used as it is.

Sockets live in ``<state dir>/cm`` (0700) under 16-hex-digit names (macOS limits a socket
path to 104 bytes, and ssh binds a 17-character temporary name first); a hop's name is
a hash of everything that makes its connection (config file, user, address, port, keys,
the hops in front of it).

No fabric / invoke / paramiko import: only the ``ssh`` binary.
"""
from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import secrets
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Iterator, Mapping, Optional

from ..errors import LabhopError, UsageError
from ..tunnel.local import socket_listens, write_private_json
from .openssh import SSH, Chain, Hop, _escape, explain_failure, hop_options, hop_title
from ..invocation import PROGRAM

DEFAULT_PERSIST = "10h"  # a working day: no second factor again until tomorrow
PERSIST_ENV = "LABHOP_LOGIN_PERSIST"
TRANSPORT_ENV = "LABHOP_TRANSPORT"  # "auto" (default: OpenSSH where it can share, else paramiko), "openssh", "paramiko"
TRANSPORTS = ("auto", "openssh", "paramiko")
CONTROL_SUBDIR = "cm"
SOCKET_NAME_LEN = 16
MAX_SOCKET_PATH = 104 - 1 - 17  # sun_path, minus NUL and ssh's ".XXXXXXXXXXXXXXXX" while binding
BATCH_LOGIN_TIMEOUT = 60.0  # a key-only login (the connect itself is bounded by ConnectTimeout)
INTERACTIVE_LOGIN_TIMEOUT = 600.0  # a person typing a code, or finding their phone for a push
# A mux client's words when the target's sshd refuses one more session on the connection (MaxSessions).
SESSION_REFUSED = "Session open refused by peer"
FACTS_SUBDIR = "ssh"  # what labhop learned about a target's sshd, per connection (hop_key), under the state dir
EXTRA_MASTERS = 3  # such a target's masters besides the first: the lock holder's, a step's, another run's
_PERSIST = re.compile(r"^(?:\d+[sSmMhHdDwW]?)+$|^(?:yes|no)$")


def child_env(environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The environment for ssh processes: this run's, without the --public password (only fab holds it)."""
    env = dict(os.environ if environ is None else environ)
    env.pop("LABHOP_PASSWORD", None)
    return env


class LoginNeeded(LabhopError):
    """A hop wants more than a key (a second factor, a password) and nobody can answer here."""


class SharingUnavailable(LabhopError):
    """OpenSSH connection sharing cannot work on this machine (control sockets cannot be made)."""


# -- where sockets live ------------------------------------------------------------------------

def state_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    """``$XDG_STATE_HOME/labhop`` or ``~/.local/state/labhop`` (as the tunnel's records)."""
    env = os.environ if environ is None else environ
    base = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else \
        Path(env.get("HOME") or Path.home()) / ".local" / "state"
    return base / "labhop"


def control_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    """The 0700 directory for control sockets; a short one under the temp dir when the state
    dir is too deep for a socket path."""
    wanted = state_dir(environ) / CONTROL_SUBDIR
    if len(str(wanted)) + 1 + SOCKET_NAME_LEN > MAX_SOCKET_PATH:
        tag = hashlib.sha256(str(wanted).encode()).hexdigest()[:8]  # one per state dir, as there
        wanted = Path(tempfile.gettempdir()) / f"labhop-{os.getuid()}-{tag}"
    try:
        wanted.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = wanted.stat()
    except OSError as exc:
        raise SharingUnavailable(f"cannot make {wanted} for the control sockets: {exc.strerror or exc}") from None
    if info.st_uid != os.getuid():
        raise LabhopError(f"{wanted} belongs to another user: labhop keeps its SSH control sockets there")
    if info.st_mode & 0o077:
        try:
            wanted.chmod(0o700)
        except OSError as exc:
            raise SharingUnavailable(f"cannot make {wanted} private (0700): {exc.strerror or exc}") from None
    return wanted


def sockets_unavailable(directory: Path) -> Optional[str]:
    """Why no control socket can be made in ``directory`` (a read-only or socket-less file system: some
    network and VM shares), else None. A bind of a throwaway socket: microseconds, no login spent."""
    if not hasattr(socket, "AF_UNIX"):
        return "no Unix sockets here for OpenSSH's ControlMaster"
    path = str(directory / f".t{secrets.token_hex(6)}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(path)
        except OSError as exc:
            return f"ControlMaster cannot make its socket in {directory}: {exc.strerror or exc}"
    with contextlib.suppress(OSError):
        os.unlink(path)
    return None


def hop_key(chain: Chain, index: int) -> str:
    """Everything that makes hop ``index``'s connection, including the hops before it."""
    parts = [chain.config_file or ""]
    for hop in chain.hops[:index + 1]:
        # The trust settings too: a login checked against other known_hosts files is another login.
        # Keys de-duplicated (Fabric may list one twice), as hop_options hands them to ssh.
        parts.append("\0".join([hop.alias, hop.user, hop.hostname, str(hop.port), *dict.fromkeys(hop.identity_files),
                                hop.proxy_command or "", *hop.host_key_options]))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:SOCKET_NAME_LEN]


is_live = socket_listens  # a master listens on ``path``


# -- can a person answer a prompt here? ----------------------------------------------------------

def can_prompt(environ: Optional[Mapping[str, str]] = None) -> bool:
    """ssh can ask: a controlling terminal, or SSH_ASKPASS that ssh will use."""
    env = os.environ if environ is None else environ
    if env.get("SSH_ASKPASS") and (env.get("SSH_ASKPASS_REQUIRE") in ("force", "prefer") or env.get("DISPLAY")):
        return True
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def transport_choice(environ: Optional[Mapping[str, str]] = None) -> str:
    """``$LABHOP_TRANSPORT``: auto (the default), openssh (no fallback) or paramiko."""
    env = os.environ if environ is None else environ
    chosen = (env.get(TRANSPORT_ENV) or "auto").strip().lower()
    if chosen not in TRANSPORTS:
        raise UsageError(f"${TRANSPORT_ENV}: {chosen!r} is not one of {', '.join(TRANSPORTS)}")
    return chosen


def transport_available(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """None when OpenSSH connection sharing can be used, else why not (said once by the caller).
    With ``$LABHOP_TRANSPORT=openssh`` a reason is an error instead: the user asked for no fallback."""
    env = os.environ if environ is None else environ
    chosen = transport_choice(env)
    if chosen == "paramiko":
        return f"${TRANSPORT_ENV}=paramiko"
    why: Optional[str] = None
    if sys.platform == "win32":
        why = "Windows' OpenSSH has no ControlMaster"
    elif shutil.which(SSH, path=env.get("PATH")) is None:
        why = "no ssh client on PATH"
    else:
        try:
            why = sockets_unavailable(control_dir(env))
        except SharingUnavailable as exc:
            why = str(exc)
    if why is not None and chosen == "openssh":
        raise LabhopError(f"${TRANSPORT_ENV}=openssh, but OpenSSH cannot share connections here: {why}")
    return why


def persist_value(value: Optional[str], environ: Optional[Mapping[str, str]] = None) -> str:
    env = os.environ if environ is None else environ
    chosen = value or env.get(PERSIST_ENV) or DEFAULT_PERSIST
    if not _PERSIST.match(chosen) or chosen == "no":
        raise LabhopError(f"login_persist {chosen!r}: use an ssh time such as 10h, 90m or 1d")
    return chosen


# -- the masters of one chain ----------------------------------------------------------------------

@dataclass(frozen=True)
class Master:
    hop: Hop
    index: int
    path: str  # the control socket
    ours: bool = True  # False: the user's own master, from their ssh_config

    def client_argv(self, *options: str) -> list[str]:
        """``ssh`` as a client of this master only: never a connection of its own (a dead master
        makes it fail at once instead of logging in again, which could prompt)."""
        return [SSH, "-F", "none", "-S", _escape(self.path), "-o", "ControlMaster=no", "-o", "BatchMode=yes",
                "-o", "ProxyCommand=false", "-o", "LogLevel=ERROR", "-e", "none", *options, self.hop.alias]

    def check(self) -> bool:
        return is_live(self.path)


def proxy_through(master: Master) -> str:
    """A ProxyCommand for the next hop that rides ``master`` (``-W`` through the mux, %h:%p filled by ssh)."""
    words = [_escape(shlex.quote(w)) for w in master.client_argv()[:-1]]
    return " ".join([*words, "-W", "[%h]:%p", _escape(shlex.quote(master.hop.alias))])


class Masters:
    """The masters for one chain: found live, or started hop by hop (outermost first)."""

    def __init__(self, chain: Chain, *, persist: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
                 say: Optional[Callable[[str], None]] = None) -> None:
        self.chain = chain
        self.environ = child_env(environ)  # a master lives for hours: no password meant for this run
        self.persist = persist_value(persist, self.environ)
        self.dir = control_dir(self.environ)
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self._masters: list[Master] = []
        self.started: list[str] = []  # the hops this process logged in to (the others were live)
        # Command sessions open on the target from this process, and each thread's connection of its own.
        self._sessions = 0
        self._sessions_lock = threading.Lock()
        self._local = threading.local()
        self._slots: set[int] = set()  # the extra masters (solo) this process's threads use right now
        self._one_session: Optional[bool] = None  # read from the state dir on first use

    def path_for(self, index: int) -> str:
        return str(self.dir / hop_key(self.chain, index))

    def own(self, index: int) -> Master:
        return Master(self.chain.hops[index], index, self.path_for(index))

    @property
    def target(self) -> Master:
        if len(self._masters) != len(self.chain.hops):
            self.ensure()
        return self._masters[-1]

    def live(self) -> list[Optional[Master]]:
        """Each hop's live master (ours, else the user's own), or None; starts nothing."""
        found: list[Optional[Master]] = []
        for index in range(len(self.chain.hops)):
            mine = self.own(index)
            found.append(mine if mine.check() else self._users_master(index))
        return found

    def ensure(self, *, interactive: Optional[bool] = None) -> list[Master]:
        """Every hop's master, live: reused, or started (the first login)."""
        if interactive is None:
            interactive = can_prompt(self.environ)
        masters: list[Master] = []
        for index in range(len(self.chain.hops)):
            mine = self.own(index)
            if mine.check():
                masters.append(mine)
                continue
            users = self._users_master(index)
            if users is not None:
                masters.append(users)
                continue
            with self._login_lock():
                if not mine.check():  # another run may have logged in while this one waited
                    self._start(index, masters[-1] if masters else None, interactive=interactive)
                    self.started.append(mine.hop.name)
            masters.append(mine)
        self._masters = masters
        return masters

    def exit_all(self) -> list[str]:
        """Close labhop's own masters, innermost first (a jump host's carries the ones behind it).
        The user's own masters are theirs to close. Returns the hop names closed."""
        closed: list[str] = []
        last = len(self.chain.hops) - 1
        for index in reversed(range(len(self.chain.hops))):
            extra = [Master(self.chain.hops[index], index, self.extra_path(k))
                     for k in range(1, EXTRA_MASTERS + 1)] if index == last else []
            live = [m for m in [*extra, self.own(index)] if m.check()]
            for mine in live:
                self.close(mine)
            if live:
                closed.append(self.chain.hops[index].name)
        return closed

    def close(self, master: Master) -> None:
        subprocess.run(master.client_argv("-O", "exit"), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=15, check=False, env=self.environ)

    def hold_spec(self, forward_args: list[str]) -> dict[str, object]:
        """What tasks/tunnel/hold.py needs to keep forwards in the target's master: each hop's socket
        and how to start it again without a prompt (None for the user's own master)."""
        masters = self._masters or self.ensure()
        hops: list[dict[str, object]] = []
        for index, master in enumerate(masters):
            start = self.start_argv(index, masters[index - 1] if index else None, interactive=False) \
                if master.ours else None
            hops.append({"name": master.hop.name, "path": master.path, "start": start})
        return {"hops": hops, "client": masters[-1].client_argv()[:-1], "alias": masters[-1].hop.alias,
                "forwards": forward_args}

    # -- a target whose sshd allows one session per connection (MaxSessions 1) ------------------------

    @property
    def facts_path(self) -> Path:
        return state_dir(self.environ) / FACTS_SUBDIR / f"{hop_key(self.chain, len(self.chain.hops) - 1)}.json"

    @property
    def one_session(self) -> bool:
        """Has this target refused a second session on one connection (remembered across runs)?"""
        if self._one_session is None:
            try:
                self._one_session = json.loads(self.facts_path.read_text()).get("max_sessions") == 1
            except (OSError, ValueError, AttributeError):
                self._one_session = False
        return self._one_session

    def remember_one_session(self) -> None:
        """Said once, and written down so that later runs open a connection of a command's own at once."""
        if self._one_session:
            return
        self._one_session = True
        with contextlib.suppress(OSError):
            self.facts_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_private_json(str(self.facts_path), {"max_sessions": 1, "target": self.chain.target.name})
        self.say(f"labhop: {self.chain.target.name}: its sshd allows one session per connection (MaxSessions 1): "
                 f"commands that overlap (the run's lock, another run) get an SSH connection of their own")

    @property
    def busy(self) -> bool:
        return self._sessions > 0

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Count a command session open on the target while it runs."""
        with self._sessions_lock:
            self._sessions += 1
        try:
            yield
        finally:
            with self._sessions_lock:
                self._sessions -= 1

    @property
    def in_solo(self) -> bool:
        """Is this thread on a connection of its own right now?"""
        return getattr(self._local, "solo", None) is not None

    @property
    def current(self) -> Master:
        """The master this thread's commands use: its connection of its own while it has one, else the target's."""
        solo: Optional[Master] = getattr(self._local, "solo", None)
        return solo if solo is not None else self.target

    def extra_path(self, slot: int) -> str:
        """The socket of the target's extra master number ``slot`` (a target allowing one session per connection)."""
        return str(self.dir / (hop_key(self.chain, len(self.chain.hops) - 1)[:SOCKET_NAME_LEN - 2] + f"{slot:02d}"))

    @contextlib.contextmanager
    def solo(self, skip: Collection[int] = ()) -> Iterator[tuple[Master, int, bool]]:
        """Another master of the target's for this thread's next commands (a target allowing one session per
        connection): the first of ``EXTRA_MASTERS`` that no thread of this process uses, reused when live, else
        started like any master (through the jump hosts' masters, one login at a time, a second factor asked
        on the terminal) and kept for later runs as long as the first. Yields (master, slot, started now)."""
        masters = self._masters or self.ensure()
        index = len(self.chain.hops) - 1
        with self._sessions_lock:
            free = [k for k in range(1, EXTRA_MASTERS + 1) if k not in self._slots and k not in skip]
            if not free:
                raise LabhopError(f"{hop_title(self.chain, index)}: its sshd allows one session per connection and "
                                  f"{EXTRA_MASTERS + 1} of labhop's are busy (other runs); run again later")
            slot = free[0]
            self._slots.add(slot)
        try:
            master = Master(self.chain.hops[index], index, self.extra_path(slot))
            started = False
            if not master.check():
                with self._login_lock():
                    if not master.check():  # another run may have started it while this one waited
                        self._start(index, masters[index - 1] if index else None,
                                    interactive=can_prompt(self.environ), path=master.path)
                        started = True
            self._local.solo = master
            yield master, slot, started
        finally:
            self._local.solo = None
            with self._sessions_lock:
                self._slots.discard(slot)

    def _users_master(self, index: int) -> Optional[Master]:
        """The user's own ControlMaster for this hop (ssh_config), when it runs: reused as it is.
        Only for a hop reached the way ssh_config reaches it (an alias, no inventory jump in front)."""
        hop = self.chain.hops[index]
        if index > 0 or hop.alias != hop.name:
            return None
        argv = [SSH, *(["-F", self.chain.config_file] if self.chain.config_file else []), "-G", hop.alias]
        try:
            out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10,
                                 check=False, env=self.environ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        values = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
        path = values.get("controlpath", "none").strip()
        if path in ("", "none") or values.get("user") != hop.user or values.get("port") != str(hop.port):
            return None
        path = os.path.expanduser(path)
        if not is_live(path):
            return None
        return Master(hop, index, path, ours=False)

    @contextlib.contextmanager
    def _login_lock(self) -> Iterator[None]:
        """One login at a time on this machine (threads of a fleet and other fab runs alike)."""
        fd = os.open(self.dir / "login.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def start_argv(self, index: int, jump: Optional[Master], *, interactive: bool, path: Optional[str] = None,
                   persist: Optional[str] = None) -> list[str]:
        hop = self.chain.hops[index]
        proxy = proxy_through(jump) if jump is not None else (
            _escape(hop.proxy_command) if hop.proxy_command else "none")
        argv = [SSH, "-f", "-N", "-T",
                "-o", "ControlMaster=yes", "-o", f"ControlPath={_escape(path or self.path_for(index))}",
                "-o", f"ControlPersist={persist or self.persist}",
                # The master holds what later runs add (forwards); none from the user's config.
                "-o", "ClearAllForwardings=yes",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]
        if interactive:
            argv += ["-o", "BatchMode=no"]  # the first value given wins over hop_options' BatchMode=yes
            if hop.host_key_mode == "ask" and not hop.batch_mode:
                argv += ["-o", "StrictHostKeyChecking=ask"]
        argv += hop_options(hop, self.chain, proxy)
        argv.append(hop.alias)
        return argv

    def _start(self, index: int, jump: Optional[Master], *, interactive: bool, path: Optional[str] = None,
               persist: Optional[str] = None) -> None:
        hop = self.chain.hops[index]
        _known_hosts_dir(hop)
        path = path or self.path_for(index)
        argv = self.start_argv(index, jump, interactive=interactive, path=path, persist=persist)
        with tempfile.TemporaryFile() as err:
            try:
                # stdin: with -f the master detaches after login; stderr to a file, not a pipe,
                # since the detached master (and its ProxyCommand) may keep it open.
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                      timeout=INTERACTIVE_LOGIN_TIMEOUT if interactive else BATCH_LOGIN_TIMEOUT,
                                      env=self.environ, check=False)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = None
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        for line in stderr.splitlines():
            if "Permanently added" in line:  # accept-new: as labhop's own check says it
                self.say(f"labhop: {hop.name}: permanently added {line.split('added', 1)[1].strip()}")
        if code == 0 and is_live(path):
            return
        if code is None:
            raise LabhopError(f"{hop_title(self.chain, index)}: no login within "
                              f"{int(INTERACTIVE_LOGIN_TIMEOUT if interactive else BATCH_LOGIN_TIMEOUT)}s")
        raise login_failure(stderr, self.chain, index, interactive=interactive)


def _known_hosts_dir(hop: Hop) -> None:
    """Make the first user known_hosts file's directory (0700), as labhop's own check does: ssh
    accepts a new key but cannot record it where the directory is missing."""
    for option in hop.host_key_options:
        if option.startswith("UserKnownHostsFile="):
            files = shlex.split(option.split("=", 1)[1])
            if files and files[0] != "/dev/null":
                Path(files[0]).expanduser().parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            return


_OFFENDING = re.compile(r"Offending (\S+) key in (\S+):(\d+)")
_SENT = re.compile(r"fingerprint for the (\S+) key sent by the remote host is\s+(\S+?)\.?$", re.M)
_UNKNOWN = re.compile(r"No (\S+) host key is known for (\S+) and")
_REVOKED = re.compile(r"The (\S+) host key for (\S+) is marked as revoked")


def hostkey_failure(stderr: str, chain: Chain, index: int, *, interactive: bool) -> Optional[str]:
    """ssh's host-key refusal, said the way labhop's own check says it (tasks/ssh/hostkeys.py)."""
    hop = chain.hops[index]
    where = hop_title(chain, index)
    name = hop.hostname if hop.port == 22 else f"[{hop.hostname}]:{hop.port}"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        sent, offending = _SENT.search(stderr), _OFFENDING.search(stderr)
        offered = f"{sent.group(1)} key {sent.group(2)}" if sent else "another key"
        known = f"{offending.group(2)}:{offending.group(3)}" if offending else "known_hosts"
        path = offending.group(2) if offending else "~/.ssh/known_hosts"
        return (f"{where}: host key of {name} has CHANGED: it offers {offered}, {known} has another; refusing to "
                f"connect (someone may be intercepting; if the host was reinstalled, check the new key, then "
                f"`ssh-keygen -R {shlex.quote(name)} -f {path}`)")
    revoked = _REVOKED.search(stderr)
    if revoked:
        return f"{where}: host key of {name} is revoked ({revoked.group(1)} key); refusing to connect"
    unknown = _UNKNOWN.search(stderr)
    if unknown:
        authority = cert_authority_for(hop, unknown.group(2))
        if authority:  # ssh fell back to the plain key: no certificate, or one from another CA
            return (f"{where}: host key of {name} is unknown ({unknown.group(1)} key): {authority} trusts a "
                    f"certificate authority for it, but the host showed no certificate that CA signed; refusing "
                    f"to connect (ask the host's admins which CA signs its host certificate)")
        why = ("StrictHostKeyChecking is yes" if hop.host_key_mode == "yes" else
               "StrictHostKeyChecking is ask and there is no terminal to ask on")
        return (f"{where}: host key of {name} is unknown ({unknown.group(1)} key, not in the known_hosts files) "
                f"and {why}: check the fingerprint, then `ssh {hop.name}` once (or `{PROGRAM} -H {chain.target.name} "
                f"login` on a terminal), or set StrictHostKeyChecking accept-new for it in ssh_config")
    return None


def cert_authority_for(hop: Hop, name: str) -> Optional[str]:
    """``FILE:LINE`` of an ``@cert-authority`` line for ``name`` (``[host]:port`` as ssh names it) in the
    hop's known_hosts files, if any. Plain patterns only (a hashed one cannot name a CA's hosts)."""
    host = name[1:].split("]:", 1)[0] if name.startswith("[") else name
    for option in hop.host_key_options:
        key, _, value = option.partition("=")
        if key not in ("UserKnownHostsFile", "GlobalKnownHostsFile"):
            continue
        for path in shlex.split(value):
            try:
                lines = Path(path).expanduser().read_text(errors="replace").splitlines()
            except OSError:
                continue
            for number, line in enumerate(lines, start=1):
                fields = line.split()
                if len(fields) >= 3 and fields[0] == "@cert-authority" and _patterns_match(fields[1], (name, host)):
                    return f"{path}:{number}"
    return None


def _patterns_match(patterns: str, names: tuple[str, ...]) -> bool:
    """ssh's host patterns: ``*``/``?`` wildcards, case-insensitive, a matching ``!negation`` wins."""
    found = False
    for pattern in patterns.lower().split(","):
        negated = pattern.startswith("!")
        if any(fnmatch.fnmatchcase(n.lower(), pattern.lstrip("!").replace("[", "[[]")) for n in names):
            if negated:
                return False
            found = True
    return found


_CONNECT = re.compile(r"ssh: connect to host (\S+) port (\d+): (.+)")
_OPEN_FAILED = re.compile(r"open failed: (?:connect failed|administratively prohibited): ?(.*)")


def login_failure(stderr: str, chain: Chain, index: int, *, interactive: bool) -> LabhopError:
    """One line for a master that did not start at hop ``index`` (every hop before it is logged in):
    a hop that needs a person is named as such; a hop behind a jump host that cannot be reached is
    said as "JUMP cannot reach HOP"."""
    stderr = stderr.replace("\r\n", "\n")  # ssh ends its log lines with CRLF
    hostkey = hostkey_failure(stderr, chain, index, interactive=interactive)
    if hostkey:
        return LabhopError(hostkey)
    title = hop_title(chain, index)
    listener = re.search(r"unix_listener: (.+)", stderr)
    if listener:  # the socket check passed, then ssh could not bind (the file system changed under us)
        return SharingUnavailable(f"{title}: OpenSSH could not make its control socket ({listener.group(1).strip()}); "
                                  f"`LABHOP_TRANSPORT=paramiko` works without one")
    methods = re.search(r"Permission denied \(([^)]*)\)", stderr)
    if methods:
        wants = set(methods.group(1).split(","))
        if not interactive and wants & {"keyboard-interactive", "password"}:
            return LoginNeeded(f"{title} needs a login (it asks for more than a key: {', '.join(sorted(wants))}): "
                               f"run `{PROGRAM} -H {chain.target.name} login` on a terminal")
        if "publickey" in wants or not wants & {"gssapi-with-mic", "gssapi-keyex"}:
            what = "no key offered was accepted"
        else:  # a Kerberos-only host: the ticket is what is missing, not a key
            what = "no Kerberos ticket was accepted (`klist` shows yours, `kinit` gets one)"
        return LabhopError(f"{title}: SSH authentication failed: {what} (Permission denied ({methods.group(1)}))")
    resolve = re.search(r"Could not resolve hostname (\S+?):? (.+)", stderr)
    if resolve:
        error = UsageError if "not known" in resolve.group(2) or "No address" in resolve.group(2) else LabhopError
        return error(f"{title}: cannot resolve host name ({resolve.group(2).strip()}); "
                     f"is it in inventory.toml or ssh_config?")
    connect = _CONNECT.search(stderr)
    if connect and index == 0:
        return LabhopError(f"{title}: cannot connect to {connect.group(1)}:{connect.group(2)}: "
                           f"{connect.group(3).strip()}")
    if index > 0 and ("stdio forwarding failed" in stderr or "open failed" in stderr
                      or "Connection closed by UNKNOWN" in stderr):
        found = _OPEN_FAILED.search(stderr)
        detail = (found.group(1).strip() if found else "") or "connect failed"
        return LabhopError(f"{chain.hops[index - 1].name} cannot reach {title}: "
                           f"the jump host's sshd could not connect ({detail})")
    return LabhopError(explain_failure(stderr, chain))
