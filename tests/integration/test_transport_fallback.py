"""Where OpenSSH connection sharing does not work as it is, labhop notices, says so once, and goes on.

Real sshds on loopback: a target with ``MaxSessions 1`` (one session per connection: the run's lock holder
plus a step is one too many), ``MaxSessions 0`` (forwarding only: fine for a jump host, no commands on a
target), a PATH without ``ssh``, control sockets that cannot be made (a read-only mount in a mount
namespace of the test's own), and paramiko's keyboard-interactive second factor asked on a real terminal
(a pty that is fab's controlling terminal; the code typed from tests/harness/totp.py).
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import termios
import time
from pathlib import Path
from typing import Iterator

import pytest

from labhop.ssh.master import control_dir
from tests.harness.sshd import SshServer, start_sshd, write_ssh_config
from tests.harness.totp import accepted, make_second_factor, second_factor_possible, start_sshd_2fa, totp
from tests.support import FAB, REPO, FabResult, Workspace, free_port, http_status, need

pytestmark = pytest.mark.integration

NOTICE = "allows one session per connection (MaxSessions 1)"
PARAMIKO = "labhop: SSH through paramiko"


def _url(result: FabResult) -> str:
    return next(line.split("open: ", 1)[1] for line in result.stdout.splitlines() if "open: " in line)


class Site:
    """laptop -> gate -> the targets (ProxyJump gate), key only; sshd options per server."""

    def __init__(self, root: Path, servers: dict[str, dict[str, object]], jumps: dict[str, list[str]],
                 inventory: str = "") -> None:
        self.root = root
        self.servers: dict[str, SshServer] = {}
        key = None
        for name, options in servers.items():
            ready = options.get("MaxSessions") != 0  # the harness's own `ssh true` needs a session
            server = start_sshd(root, name, client_key=key, sshd_options=options, ready_check=ready)
            key = server.identity_file
            self.servers[name] = server
        config = write_ssh_config(root / "ssh_config", list(self.servers.values()), jumps=jumps)
        self.ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=config)
        self.ws.write_inventory('[defaults]\nprefix = "~/.labhop-fallback"\n' + inventory)
        self.state = root / "state"

    @property
    def sockets(self) -> Path:
        return control_dir({"XDG_STATE_HOME": str(self.state)})

    def env(self, **extra: str) -> dict[str, str]:
        return {"XDG_STATE_HOME": str(self.state), **extra}

    def fab(self, *args: str, host: str, timeout: float = 600, **env: str) -> FabResult:
        return self.ws.fab(*args, host=host, env=self.env(**env), timeout=timeout, detach=True)

    def stop(self, hosts: tuple[str, ...] = ()) -> None:
        for host in hosts:
            self.fab("tunnel", "--close", host=host, timeout=60)
            self.fab("stop", host=host, timeout=120)
            self.fab("logout", host=host, timeout=60)
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="module")
def one_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    port = free_port()
    site = Site(tmp_path_factory.mktemp("maxsessions1"), {"gate": {}, "solo": {"MaxSessions": 1}},
                jumps={"solo": ["gate"]}, inventory=f"[hosts.solo]\nport = {port}\n")
    try:
        yield site
    finally:
        site.stop(("solo",))


def test_a_target_with_max_sessions_1_serves_and_says_so_once(one_session: Site) -> None:
    site = one_session
    served = site.fab("serve", host="solo").ok()
    assert served.stderr.count(NOTICE) == 1, served.stderr  # one line, not one per command
    assert "Traceback" not in served.output
    assert "open: http://127.0.0.1:" in served.stdout
    facts = list((site.state / "labhop" / "ssh").glob("*.json"))
    assert len(facts) == 1 and json.loads(facts[0].read_text())["max_sessions"] == 1
    assert facts[0].stat().st_mode & 0o777 == 0o600

    # Remembered: later runs neither rediscover it (no refused attempt, so no second notice) nor fail.
    for _ in range(2):
        status = site.fab("status", host="solo").ok()
        assert "running: pid" in status.stdout and NOTICE not in status.output
        assert "overlapping commands get a connection of their own" in status.stdout
    again = site.fab("serve", host="solo").ok()  # the lock holder and the steps at once: again, no notice
    assert NOTICE not in again.output and "Traceback" not in again.output
    opened = site.fab("tunnel", "--background", "--local-port", str(free_port()), host="solo").ok()
    assert http_status(_url(opened).replace("/lab?", "/api/contents?")) == 200
    assert "closed" in site.fab("tunnel", "--close", host="solo").ok().stdout
    # Every command session ran over one of labhop's masters: the hops' own, and one extra for the target
    # (what ran beside the lock holder); `logout` closes them all.
    assert len([p for p in site.sockets.iterdir() if p.name != "login.lock"]) == 3
    assert "logout: closed the login to gate, solo" in site.fab("logout", host="solo").ok().stdout
    assert [p.name for p in site.sockets.iterdir()] == ["login.lock"]


def test_on_paramiko_too_a_target_with_max_sessions_1_gets_a_connection_per_overlapping_session(
        one_session: Site) -> None:
    """paramiko's path (no OpenSSH sharing): the lock holder's session and a step's at once, SFTP too."""
    site = one_session
    stopped = site.fab("stop", host="solo", LABHOP_TRANSPORT="paramiko").ok()  # lock holder + the stop's steps
    assert stopped.stderr.count(NOTICE) == 1 and stopped.stderr.count(PARAMIKO) == 1, stopped.stderr
    served = site.fab("serve", host="solo", LABHOP_TRANSPORT="paramiko").ok()
    assert served.stderr.count(NOTICE) == 1 and "Traceback" not in served.output, served.stderr
    assert "running: pid" in site.fab("status", host="solo", LABHOP_TRANSPORT="paramiko").ok().stdout


def test_a_2fa_target_with_max_sessions_1_asks_once_per_connection_not_per_command(tmp_path: Path) -> None:
    ok, why = second_factor_possible()
    need(ok, why)
    factor = make_second_factor(tmp_path / "2fa")
    server = start_sshd_2fa(tmp_path, "mfa", factor, sshd_options={"MaxSessions": 1})
    port = free_port()
    ws = Workspace(root=tmp_path, inventory=tmp_path / "inventory.toml",
                   ssh_config=write_ssh_config(tmp_path / "ssh_config", [server]))
    ws.write_inventory(f'[defaults]\nprefix = "~/.labhop-fallback"\n[hosts.mfa]\nport = {port}\n')
    plain = {"XDG_STATE_HOME": str(tmp_path / "state")}
    asking = {**plain, **factor.askpass_env()}
    try:
        served = ws.fab("serve", host="mfa", env=asking, detach=True).ok()
        assert served.stderr.count(NOTICE) == 1, served.stderr
        # The first master, and one more for the steps that run beside the lock holder: two codes, once each.
        assert len(factor.prompts()) == 2 and accepted(server) == 2, factor.prompts()
        again = ws.fab("serve", host="mfa", env=asking, detach=True).ok()
        assert NOTICE not in again.output
        for _ in range(2):  # no terminal, no askpass: the live masters are enough
            assert "running: pid" in ws.fab("status", host="mfa", env=plain, detach=True).ok().stdout
        assert len(factor.prompts()) == 2 and accepted(server) == 2
        assert "logout: closed the login to mfa" in ws.fab("logout", host="mfa", env=plain, detach=True).ok().stdout
        failed = ws.fab("serve", host="mfa", env=plain, detach=True, timeout=120)
        lines = [line for line in failed.stderr.splitlines() if line.strip()]
        assert failed.returncode == 1 and len(lines) == 1 and "needs a login" in lines[0], failed.stderr
    finally:
        ws.fab("stop", host="mfa", env=asking, detach=True, timeout=120)
        ws.fab("logout", host="mfa", env=plain, detach=True, timeout=60)
        server.stop()


def test_max_sessions_0_is_fine_on_a_jump_host_and_one_line_on_a_target(tmp_path: Path) -> None:
    site = Site(tmp_path, {"gate0": {"MaxSessions": 0}, "inner": {}, "closed": {"MaxSessions": 0}},
                jumps={"inner": ["gate0"], "closed": ["gate0"]})
    try:
        # Through a forwarding-only bastion: its master carries the next hop (-W), no session there.
        for _ in range(2):
            out = site.fab("status", host="inner").ok()
            assert "not running" in out.stdout and "login: live to gate0, inner" in out.stdout
        started = time.monotonic()
        failed = site.fab("status", host="closed", timeout=120)
        assert failed.returncode == 1, failed.output
        assert time.monotonic() - started < 30
        lines = [line for line in failed.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "closed" in lines[0] and "refuses every command session" in lines[0], lines
        assert "Traceback" not in failed.output
        on_paramiko = site.fab("status", host="closed", timeout=120, LABHOP_TRANSPORT="paramiko")
        lines = [line for line in on_paramiko.stderr.splitlines() if line.strip() and PARAMIKO not in line]
        assert on_paramiko.returncode == 1 and len(lines) == 1, on_paramiko.output
        assert "refuses every command session" in lines[0] and "Traceback" not in on_paramiko.output
        # The refused run left no connection of its own behind.
        assert len([p for p in site.sockets.iterdir() if p.name != "login.lock"]) == 3  # gate0, inner, closed
    finally:
        for host in ("inner", "closed"):
            site.fab("logout", host=host, timeout=60)
        site.stop()


def _path_without_ssh(root: Path) -> str:
    """A PATH holding everything of /usr/bin and /bin but the OpenSSH client programs."""
    bindir = root / "bin-no-ssh"
    bindir.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin"):
        for entry in Path(folder).iterdir() if Path(folder).is_dir() else ():
            if entry.name.startswith("ssh") or entry.name in ("scp", "sftp") or (bindir / entry.name).exists():
                continue
            (bindir / entry.name).symlink_to(entry)
    return f"{Path(FAB).parent}:{bindir}"


@pytest.fixture(scope="module")
def key_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = Site(tmp_path_factory.mktemp("fallback-keys"), {"gate": {}, "k1": {}, "k2": {}},
                jumps={"k1": ["gate"], "k2": ["gate"]})
    try:
        yield site
    finally:
        for host in ("k1", "k2"):
            site.fab("logout", host=host, timeout=60)
        site.stop()


def test_without_an_ssh_client_a_fleet_uses_paramiko_and_says_so_once(key_site: Site, tmp_path: Path) -> None:
    site = key_site
    path = _path_without_ssh(tmp_path)
    assert shutil.which("ssh", path=path) is None
    result = site.fab("status", host="k1,k2", PATH=path).ok()
    assert result.stderr.count(PARAMIKO) == 1, result.stderr
    assert "no ssh client on PATH" in result.stderr and "Traceback" not in result.output
    assert "[k1] not running" in result.stdout and "[k2] not running" in result.stdout
    assert not [p for p in site.sockets.iterdir() if p.name != "login.lock"]
    # Asked for OpenSSH, with none here: one line, no fallback.
    forced = site.fab("status", host="k1", PATH=path, LABHOP_TRANSPORT="openssh")
    assert forced.returncode == 1 and "no ssh client on PATH" in forced.stderr, forced.output
    assert len([line for line in forced.stderr.splitlines() if line.strip()]) == 1, forced.stderr
    bad = site.fab("status", host="k1", LABHOP_TRANSPORT="putty")
    assert bad.returncode == 2 and "LABHOP_TRANSPORT" in bad.stderr, bad.output


def test_where_control_sockets_cannot_be_made_paramiko_takes_over(key_site: Site) -> None:
    """The state dir on a file system that takes no sockets (here: a read-only bind mount of its cm dir,
    in a mount namespace of this test's own): ControlMaster cannot work, paramiko does, said once."""
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare for a private mount")
    site = key_site
    cm = site.sockets
    before = sorted(p.name for p in cm.iterdir())

    def fab_ro(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(cm),
                FAB, "-r", str(REPO), "-S", str(site.ws.ssh_config), "-H", "k1,k2", *args]
        return subprocess.run(argv, cwd=site.root, env=site.ws.env(site.env(**extra)), capture_output=True,
                              text=True, timeout=300, start_new_session=True, stdin=subprocess.DEVNULL)

    result = fab_ro("status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.count(PARAMIKO) == 1 and "ControlMaster cannot make its socket" in result.stderr, \
        result.stderr
    assert "[k1] not running" in result.stdout and "[k2] not running" in result.stdout
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in cm.iterdir()) == before  # nothing was written there
    forced = fab_ro("status", LABHOP_TRANSPORT="openssh")
    assert forced.returncode == 1 and "ControlMaster cannot make its socket" in forced.stderr, forced.stderr


# -- paramiko's keyboard-interactive, on a real terminal -------------------------------------------------

class Terminal:
    """fab with a pty as its controlling terminal (stdin, stdout and stderr are not the pty: only /dev/tty)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.master, slave = os.openpty()
        slave_name = os.ttyname(slave)
        os.close(slave)

        def become_session_leader_on_the_pty() -> None:
            os.setsid()
            fd = os.open(slave_name, os.O_RDWR)
            fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
            os.close(fd)

        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=become_session_leader_on_the_pty)
        self.seen = ""

    def read_until(self, pattern: str, timeout: float) -> str:
        """Terminal output until ``pattern`` shows (returns what came since the last call)."""
        deadline = time.monotonic() + timeout
        start = len(self.seen)
        while not re.search(pattern, self.seen[start:]):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                raise AssertionError(f"no {pattern!r} on the terminal; it showed {self.seen[start:]!r}")
            if select.select([self.master], [], [], min(left, 0.2))[0]:
                try:
                    self.seen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:  # the last holder of the pty went away
                    pass
        return self.seen[start:]

    def quiet_for(self, seconds: float) -> str:
        """What the terminal shows within ``seconds`` (nothing, when no one asks)."""
        end = time.monotonic() + seconds
        start = len(self.seen)
        while time.monotonic() < end:
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:
                    break
        return self.seen[start:]

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def finish(self, timeout: float) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        os.close(self.master)
        return self.proc.returncode, out, err


@pytest.fixture(scope="module")
def paramiko_2fa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, object]]:
    ok, why = second_factor_possible()
    need(ok, why)
    root = tmp_path_factory.mktemp("paramiko-2fa")
    factor = make_second_factor(root / "2fa")
    bastion = start_sshd_2fa(root, "bastion", factor)
    site = Site.__new__(Site)
    site.root, site.state = root, root / "state"
    site.servers = {"bastion": bastion}
    key = bastion.identity_file
    for name in ("p1", "p2", "p3"):
        site.servers[name] = start_sshd(root, name, client_key=key)
    config = write_ssh_config(root / "ssh_config", list(site.servers.values()),
                              jumps={n: ["bastion"] for n in ("p1", "p2", "p3")})
    site.ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=config)
    site.ws.write_inventory('[defaults]\nprefix = "~/.labhop-fallback"\n')
    try:
        yield site, factor
    finally:
        site.stop()


def _on_terminal(site: Site, hosts: str) -> Terminal:
    env = site.ws.env(site.env(LABHOP_TRANSPORT="paramiko"))
    for name in ("SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "DISPLAY", "SSH_AUTH_SOCK"):
        env.pop(name, None)
    argv = [FAB, "-r", str(REPO), "-S", str(site.ws.ssh_config), "-H", hosts, "status"]
    return Terminal(argv, env, site.root)


PROMPT = r"Password: ?$"


def test_paramiko_asks_the_second_factor_on_the_terminal_once(paramiko_2fa: tuple[Site, object]) -> None:
    site, factor = paramiko_2fa
    secret = factor.secret_file.read_text().strip()  # type: ignore[attr-defined]
    before = accepted(site.servers["bastion"])
    term = _on_terminal(site, "p1")
    shown = term.read_until(PROMPT, timeout=60)
    assert "bastion" in shown and "asks for a second factor" in shown, shown
    term.type(totp(secret) + "\n")
    code, out, err = term.finish(timeout=120)
    assert code == 0, out + err
    assert "not running" in out and err.count(PARAMIKO) == 1 and "Password" not in out + err
    assert term.seen.count("Password:") == 1, term.seen
    assert accepted(site.servers["bastion"]) == before + 1


def test_a_fleet_on_paramiko_asks_one_host_at_a_time(paramiko_2fa: tuple[Site, object]) -> None:
    """Three hosts behind the 2FA bastion, each with its own paramiko login there: three prompts, the next
    one only once the last was answered (the fleet's threads take turns on the terminal)."""
    site, factor = paramiko_2fa
    secret = factor.secret_file.read_text().strip()  # type: ignore[attr-defined]
    before = accepted(site.servers["bastion"])
    term = _on_terminal(site, "p1,p2,p3")
    for _ in range(3):
        shown = term.read_until(PROMPT, timeout=120)
        assert shown.count("Password:") == 1, shown
        # While this one waits for its answer, no other host asks (a second prompt would show here).
        assert "Password" not in term.quiet_for(1.5)
        term.type(totp(secret) + "\n")
    code, out, err = term.finish(timeout=180)
    assert code == 0, out + err
    assert all(f"[p{i}] not running" in out for i in (1, 2, 3)) and err.count(PARAMIKO) == 1, out + err
    assert term.seen.count("Password:") == 3
    assert len(re.findall(r"labhop: bastion \(\S+\) asks for a second factor", term.seen)) == 3, \
        term.seen
    assert accepted(site.servers["bastion"]) == before + 3
