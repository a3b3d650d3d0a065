"""Throwaway real OpenSSH servers for tests.

``start_sshd`` runs ``/usr/sbin/sshd -D`` with a generated config, host key,
client key and authorized_keys, all inside a scratch ``workdir``.  Nothing is
read from or written to the real ``~/.ssh`` or ``/etc/ssh``.

HOME isolation (measured on OpenSSH 9.2, Debian 12)
---------------------------------------------------
``SetEnv HOME=<dir>`` in sshd_config *does* override ``$HOME`` for sessions:
``echo $HOME``, ``bash -lc 'echo $HOME'`` (which also reads ``<dir>/.profile``)
and ``cd ~`` all see ``<dir>``.  It does *not* change where a session starts:
sshd ``chdir()``s to the passwd home (``/root``) before the command runs, and
the sftp subsystem starts there too.  So with ``SetEnv`` alone a relative path
(``mkdir foo``, ``Connection.put("x")``) would still land in the real
``/root``.

To close that gap, when we are root and ``unshare`` is available, sshd is
started in a private mount namespace in which a copy of ``/etc/passwd`` is
bind-mounted over ``/etc/passwd`` with *our user's home field* pointing at the
throwaway home.  Only that sshd and its sessions see the modified passwd, so
for them the account's home really is ``SshServer.home``: initial cwd, sftp
start directory, ``$HOME``, ``~``, ``~root`` and ``getent passwd`` all agree.
The rest of the filesystem (including ``/root``) stays visible, unchanged.
``SetEnv HOME`` is kept as well (it is a no-op then, and the only mechanism in
the non-root fallback).  ``SshServer.home_isolation`` says which mode is in
effect: ``"passwd-bind"`` or ``"setenv"`` (weaker: cwd is the real home).

Sessions also get ``TMUX_TMPDIR=<workdir>/sshd-<name>/tmux`` so that tmux
servers started on different test "hosts" (and on the controller) do not share
the default socket in the common ``/tmp``.  Everything a session starts stays
in sshd's private mount namespace, which is how ``stop()`` finds and kills
daemons (tmux, nohup'ed servers) that detached from the process tree.

Caveat of passwd-bind: inside sessions ``/etc/passwd`` is a mount point, so
tools that rewrite it by rename (``useradd``, ``adduser`` in package
postinst scripts) fail with EBUSY there.
"""
from __future__ import annotations

import atexit
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
READY_TIMEOUT = 10.0
NETNS_PORT = 2222

__all__ = [
    "SshServer",
    "start_sshd",
    "write_ssh_config",
    "write_known_hosts",
    "make_client_key",
    "known_hosts_name",
    "free_port",
]


# --------------------------------------------------------------------------
# small helpers


def _run(argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 30)
    return subprocess.run(list(argv), **kw)


def _keygen(path: Path, comment: str) -> None:
    if path.exists():
        return
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    path.chmod(0o600)


def make_client_key(workdir: Path, name: str = "client_ed25519") -> Path:
    """Create (once) a passphrase-less ed25519 client key in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / name
    _keygen(key, "labhop-test-client")
    return key


def end_process(proc: subprocess.Popen[Any], timeout: float = 5) -> None:
    """SIGTERM, then SIGKILL if it has not gone within ``timeout``; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``address`` a moment ago (root namespace)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def known_hosts_name(address: str, port: int) -> str:
    """The host-name form OpenSSH writes into known_hosts."""
    return address if port == 22 else f"[{address}]:{port}"


def _cfg_value(value: object) -> str:
    text = str(value)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:  # pragma: no cover - diagnostics only
        return f"<no log: {exc}>"


def _mnt_ns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _proc_table() -> dict[int, int]:
    """pid -> ppid for every visible process."""
    table: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name may contain spaces/parens: split after the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(entry)] = int(fields[1])
    return table


def _descendants(root: int, table: Mapping[int, int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


# --------------------------------------------------------------------------
# the server


@dataclass
class SshServer:
    name: str
    address: str
    port: int
    user: str
    identity_file: Path
    known_hosts: Path
    home: Path
    pid: int
    netns: str | None
    log_path: Path
    # extras -----------------------------------------------------------
    workdir: Path | None = None
    host_key: Path | None = None
    home_isolation: str = "setenv"
    #: set by callers that wrote an ssh_config containing ``Host <name>``
    ssh_config: Path | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)
    _log_file: object = field(default=None, repr=False, compare=False)
    _private_mnt_ns: str | None = field(default=None, repr=False, compare=False)
    _stopped: bool = field(default=False, repr=False, compare=False)

    # -- client side helpers ------------------------------------------------
    @property
    def known_hosts_line(self) -> str:
        return self.known_hosts.read_text().strip()

    def ssh_options(self) -> list[str]:
        """Options for a direct ``ssh`` (no config file) to this server."""
        return [
            "-F", "none",
            "-p", str(self.port),
            "-l", self.user,
            "-i", str(self.identity_file),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR",
        ]

    def ssh_argv(
        self,
        *command: str,
        config: Path | None = None,
        direct: bool = False,
        netns_exec: bool | None = None,
    ) -> list[str]:
        """argv for ``ssh`` to this server running ``command``.

        Uses ``config`` / ``self.ssh_config`` (``ssh -F cfg <name>``) when
        available and ``direct`` is false, otherwise direct options.  A
        direct connection to a server in a namespace is run inside that
        namespace (``netns_exec``) as it may be unreachable from the root ns.
        """
        cfg = config or self.ssh_config
        if cfg is not None and not direct:
            argv = ["ssh", "-F", str(cfg), self.name]
            if netns_exec is None:
                netns_exec = False
        else:
            argv = ["ssh", *self.ssh_options(), self.address]
            if netns_exec is None:
                netns_exec = self.netns is not None
        argv += list(command)
        if netns_exec and self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return argv

    def run(self, command: str, *, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        """Run a shell command on the server over ssh; returns CompletedProcess (text)."""
        return _run(self.ssh_argv(command), check=check, timeout=timeout, **kw)

    # -- teardown -------------------------------------------------------------
    def _related_pids(self) -> set[int]:
        table = _proc_table()
        pids = _descendants(self.pid, table)
        if self._private_mnt_ns:
            for pid in table:
                if _mnt_ns(pid) == self._private_mnt_ns:
                    pids.add(pid)
        if self._proc is not None and self._proc.poll() is None:
            pids.add(self.pid)
        pids.discard(os.getpid())
        return pids

    def stop(self) -> None:
        """Kill sshd, its connection handlers and everything started from its
        sessions (process tree + every process in its private mount
        namespace, which catches daemons that setsid()/double-forked away).
        Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for _ in range(5):
            pids = self._related_pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "SshServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------
# start


def _passwd_bind_possible(user: str) -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    try:
        lines = Path("/etc/passwd").read_text().splitlines()
    except OSError:
        return False
    # the account must really come from /etc/passwd (not LDAP/sssd)
    return any(line.split(":", 1)[0] == user for line in lines)


def _write_passwd_copy(path: Path, user: str, home: Path) -> None:
    out = []
    for line in Path("/etc/passwd").read_text().splitlines():
        parts = line.split(":")
        if len(parts) >= 7 and parts[0] == user:
            parts[5] = str(home)
            line = ":".join(parts)
        out.append(line)
    path.write_text("\n".join(out) + "\n")
    path.chmod(0o644)


def _sshd_config(
    *,
    address: str,
    port: int,
    host_key: Path,
    authorized_keys: Path,
    pid_file: Path,
    env: Mapping[str, object],
    overrides: Mapping[str, object] | None = None,
) -> str:
    opts = [
        ("ListenAddress", address),
        ("Port", port),
        ("HostKey", host_key),
        ("AuthorizedKeysFile", authorized_keys),
        ("PubkeyAuthentication", "yes"),
        ("PasswordAuthentication", "no"),
        ("KbdInteractiveAuthentication", "no"),
        ("UsePAM", "no"),
        ("StrictModes", "no"),
        ("PidFile", pid_file),
        ("PermitRootLogin", "yes"),
        ("AllowTcpForwarding", "yes"),
        ("GatewayPorts", "no"),
        ("Subsystem", "sftp internal-sftp"),
        ("LogLevel", "VERBOSE"),
        ("PermitTTY", "yes"),
        ("MaxStartups", 100),
        ("MaxSessions", 50),
        # speed only: the post-quantum hybrid KEX costs ~150 ms of CPU per
        # connection on small VMs; curve25519 (also what paramiko picks) is
        # still negotiated by every client.
        ("KexAlgorithms", "-sntrup761x25519-sha512*"),
        ("SetEnv", " ".join(_cfg_value(f"{k}={v}") for k, v in env.items())),
    ]
    overrides = dict(overrides or {})
    opts = [(k, overrides.pop(k, v)) for k, v in opts] + list(overrides.items())
    raw = {"Subsystem", "SetEnv", "AuthenticationMethods"}  # multi-word values that must not be quoted
    return "".join(f"{k} {v if k in raw else _cfg_value(v)}\n" for k, v in opts)


def start_sshd(
    workdir: Path,
    name: str,
    *,
    address: str = "127.0.0.1",
    netns: str | None = None,
    client_key: Path | None = None,
    port: int | None = None,
    sshd_options: Mapping[str, object] | None = None,
    binds: Sequence[tuple[Path, str]] = (),
    ready_check: bool = True,
    env: Mapping[str, str] | None = None,
) -> SshServer:
    """Start a real sshd for tests; returns once ``ssh <server> true`` works.

    Files go to ``workdir/sshd-<name>/``.  On loopback a free port is picked
    (retrying on a bind race); inside ``netns`` the port defaults to 2222.
    ``sshd_options``: sshd_config settings over the harness's (e.g. ``UsePAM``); ``binds``:
    (file, path) bind-mounted in sshd's own mount namespace (a PAM file over
    ``/etc/pam.d/sshd``; needs root and passwd-bind isolation). ``ready_check``
    False: wait only for "Server listening" (a server that wants more than the key).
    ``env``: variables for sshd over this process's (a Kerberos keytab and config: tests/harness/kdc.py).
    """
    workdir = Path(workdir).resolve()
    sdir = workdir / f"sshd-{name}"
    sdir.mkdir(parents=True, exist_ok=True)
    user = pwd.getpwuid(os.geteuid()).pw_name

    host_key = sdir / "ssh_host_ed25519_key"
    _keygen(host_key, f"labhop-test-host-{name}")
    if client_key is None:
        client_key = make_client_key(sdir, "client_ed25519")
    client_key = Path(client_key).resolve()
    pub = Path(str(client_key) + ".pub").read_text().strip()
    authorized_keys = sdir / "authorized_keys"
    authorized_keys.write_text(pub + "\n")
    authorized_keys.chmod(0o600)

    home = sdir / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    (home / ".profile").touch()
    # tmux keeps its socket in $TMUX_TMPDIR (default /tmp, shared by every
    # server and the controller since they share the filesystem); give each
    # server its own so a tmux server started "on the target" is separate.
    tmux_dir = sdir / "tmux"
    tmux_dir.mkdir(mode=0o700, exist_ok=True)

    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)

    isolation = "passwd-bind" if _passwd_bind_possible(user) else "setenv"
    passwd_copy = sdir / "passwd"
    if isolation == "passwd-bind":
        _write_passwd_copy(passwd_copy, user, home)

    host_pub = Path(str(host_key) + ".pub").read_text().split()
    log_path = sdir / "sshd.log"
    attempts = 1 if (port is not None or netns) else 3
    last_error = ""
    for _attempt in range(attempts):
        use_port = port or (NETNS_PORT if netns else free_port(address))
        known_hosts = sdir / "known_hosts"
        known_hosts.write_text(f"{known_hosts_name(address, use_port)} {host_pub[0]} {host_pub[1]}\n")
        config = sdir / "sshd_config"
        config.write_text(
            _sshd_config(
                address=address,
                port=use_port,
                host_key=host_key,
                authorized_keys=authorized_keys,
                pid_file=sdir / "sshd.pid",
                env={"HOME": home, "TMUX_TMPDIR": tmux_dir},
                overrides=sshd_options,
            )
        )
        # validate config early for a clear error
        test = subprocess.run(
            [SSHD, "-t", "-f", str(config)], capture_output=True, text=True, timeout=10
        )
        if test.returncode != 0:
            raise RuntimeError(f"sshd -t rejected {config}:\n{test.stderr}")

        argv: list[str] = []
        if netns:
            argv += ["ip", "netns", "exec", netns]
        if binds and isolation != "passwd-bind":
            raise RuntimeError(f"sshd {name!r}: bind mounts need root and unshare ({isolation} isolation)")
        if isolation == "passwd-bind":
            mounts = "".join(f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)} && " for src, dst in binds)
            argv += [
                "unshare", "--mount", "--propagation", "private", "--",
                "/bin/sh", "-c", 'mount --bind "$1" /etc/passwd && ' + mounts + 'exec "$2" -D -e -f "$3"',
                "sh", str(passwd_copy), SSHD, str(config),
            ]
        else:
            argv += [SSHD, "-D", "-e", "-f", str(config)]

        log_file = open(log_path, "ab", buffering=0)
        log_file.write(f"=== harness: {shlex.join(argv)}\n".encode())
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, **env} if env else None,
        )
        server = SshServer(
            name=name,
            address=address,
            port=use_port,
            user=user,
            identity_file=client_key,
            known_hosts=known_hosts,
            home=home,
            pid=proc.pid,
            netns=netns,
            log_path=log_path,
            workdir=sdir,
            host_key=host_key,
            home_isolation=isolation,
            _proc=proc,
            _log_file=log_file,
        )
        atexit.register(server.stop)
        try:
            _wait_ready(server, proc, probe=ready_check)
        except _BindRace as exc:
            last_error = str(exc)
            server.stop()
            continue
        except BaseException:
            server.stop()
            raise
        if isolation == "passwd-bind":
            ns = _mnt_ns(proc.pid)
            if ns and ns != _mnt_ns(os.getpid()):
                server._private_mnt_ns = ns
        return server
    raise RuntimeError(f"sshd {name!r} could not bind a port:\n{last_error}")


class _BindRace(RuntimeError):
    pass


def _wait_ready(server: SshServer, proc: subprocess.Popen, probe: bool = True) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    probe_err = ""
    listening = False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = _log_tail(server.log_path)
            if "Address already in use" in tail or "Cannot bind any address" in tail:
                raise _BindRace(tail)
            raise RuntimeError(
                f"sshd {server.name!r} exited with {proc.returncode} during startup; log tail:\n{tail}"
            )
        if not listening:
            listening = "Server listening on" in server.log_path.read_text(errors="replace")
            if not listening:
                time.sleep(0.02)
                continue
            if not probe:
                return
        remaining = max(1.0, deadline - time.monotonic())
        try:
            res = _run(server.ssh_argv("true", direct=True), check=False, timeout=min(5.0, remaining))
        except subprocess.TimeoutExpired as exc:
            probe_err = f"probe timed out: {exc}"
        else:
            if res.returncode == 0:
                return
            probe_err = res.stderr
        time.sleep(0.05)
    raise RuntimeError(
        f"sshd {server.name!r} on {server.address}:{server.port} not ready after "
        f"{READY_TIMEOUT}s (listening={listening}); last probe error: {probe_err.strip()}\n"
        f"log tail:\n{_log_tail(server.log_path)}"
    )


# --------------------------------------------------------------------------
# client configuration


def write_known_hosts(path: Path, servers: Iterable[SshServer]) -> Path:
    """Combined known_hosts with every server's host key."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(s.known_hosts_line + "\n" for s in servers))
    return path


def write_ssh_config(
    path: Path,
    servers: Sequence[SshServer],
    jumps: Mapping[str, Sequence[str]] | None = None,
    *,
    known_hosts: Path | None = None,
) -> Path:
    """Write an ssh_config with one ``Host <name>`` block per server.

    ``jumps`` maps a server name to its jump hosts, outermost first; they
    become ``ProxyJump a,b``.  The combined known_hosts file is written to
    ``known_hosts`` (default: ``<dir of path>/known_hosts``).  Returns ``path``.
    """
    path = Path(path).resolve()
    jumps = dict(jumps or {})
    known_hosts = Path(known_hosts).resolve() if known_hosts else path.parent / "known_hosts"
    write_known_hosts(known_hosts, servers)
    names = {s.name for s in servers}
    blocks = ["# generated by tests/harness/sshd.py\n"]
    for s in servers:
        lines = [
            f"Host {s.name}",
            f"    HostName {s.address}",
            f"    Port {s.port}",
            f"    User {s.user}",
            f"    IdentityFile {_cfg_value(s.identity_file)}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {_cfg_value(known_hosts)}",
            "    StrictHostKeyChecking yes",
            "    BatchMode yes",
            "    ConnectTimeout 5",
        ]
        hops = list(jumps.get(s.name, []))
        if hops:
            unknown = [h for h in hops if h.split("@")[-1].split(":")[0] not in names]
            if unknown:
                raise ValueError(f"ProxyJump hosts {unknown} for {s.name!r} have no Host block")
            lines.append(f"    ProxyJump {','.join(hops)}")
        blocks.append("\n".join(lines) + "\n")
    path.write_text("\n".join(blocks))
    return path
