"""One login per hop on hosts that ask for a second factor (key + TOTP through PAM), via OpenSSH masters.

Real sshds with ``AuthenticationMethods publickey,keyboard-interactive`` and a PAM stack checking a
TOTP code (tests/harness/totp.py); fab runs with no controlling terminal and answers through
``SSH_ASKPASS`` (a script that computes the code and logs every prompt). What is counted: the
prompts shown, and the logins each sshd accepted (its own log), for a whole session of work.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from labhop.ssh.master import control_dir
from tests.harness.sshd import SshServer, start_sshd, write_ssh_config
from tests.harness.totp import (SecondFactor, accepted, make_second_factor, partial, second_factor_possible,
                                start_sshd_2fa)
from tests.support import Workspace, free_port, http_status, need

pytestmark = pytest.mark.integration


class Site:
    """laptop -> bastion -> t1, t2, t3 (ProxyJump bastion), all on loopback; 2FA where asked."""

    def __init__(self, root: Path, *, bastion_2fa: bool, target_2fa: bool) -> None:
        ok, why = second_factor_possible()
        need(ok, why)
        self.root = root
        self.factor: SecondFactor = make_second_factor(root / "2fa")
        self.servers: dict[str, SshServer] = {}
        key = None
        for name, wants in (("bastion", bastion_2fa), ("t1", target_2fa), ("t2", False), ("t3", False)):
            server = (start_sshd_2fa(root, name, self.factor, client_key=key) if wants
                      else start_sshd(root, name, client_key=key))
            key = server.identity_file
            self.servers[name] = server
        config = write_ssh_config(root / "ssh_config", list(self.servers.values()),
                                  jumps={t: ["bastion"] for t in ("t1", "t2", "t3")})
        self.ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=config)
        self.port = free_port()
        self.ws.write_inventory(f"""
            [defaults]
            prefix = "~/.labhop-2fa"
            [hosts.t1]
            port = {self.port}
        """)
        self.state = root / "state"

    def fab(self, *args: str, host: str = "t1", askpass: bool = True, timeout: float = 600):
        env = {"XDG_STATE_HOME": str(self.state)}
        if askpass:
            env.update(self.factor.askpass_env())
        return self.ws.fab(*args, host=host, env=env, timeout=timeout, detach=True)

    def second_factors(self) -> dict[str, int]:
        return {name: accepted(server) for name, server in self.servers.items()}

    def key_logins(self, name: str) -> int:
        return accepted(self.servers[name], "publickey")

    def stop(self) -> None:
        with_state = self.state.exists()
        if with_state:
            self.fab("tunnel", "--close", askpass=False, timeout=60)
            self.fab("stop", timeout=120)
            for host in ("t1", "t2", "t3"):
                self.fab("logout", host=host, askpass=False, timeout=60)
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="module")
def bastion_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = Site(tmp_path_factory.mktemp("2fa-bastion"), bastion_2fa=True, target_2fa=False)
    try:
        yield site
    finally:
        site.stop()


def test_a_session_of_work_behind_a_2fa_bastion_asks_once(bastion_site: Site) -> None:
    site = bastion_site
    before = {name: site.key_logins(name) for name in ("t1", "t2", "t3")}  # the harness's own `ssh true`
    served = site.fab("serve").ok()
    assert f"open: http://127.0.0.1:{site.port}/lab?token=" in served.stdout
    for _ in range(2):
        assert "running: pid" in site.fab("status").ok().stdout
    for _ in range(2):  # a tunnel opened, closed, and opened again
        opened = site.fab("tunnel", "--background", "--local-port", str(free_port())).ok()
        url = next(line.split("open: ", 1)[1] for line in opened.stdout.splitlines() if "open: " in line)
        assert http_status(url.replace("/lab?", "/api/contents?")) == 200
        assert "closed" in site.fab("tunnel", "--close").ok().stdout
    fleet = site.fab("status", "--json", host="t1,t2,t3").ok()
    doc = json.loads(fleet.stdout)
    assert sorted(r["host"] for r in doc["results"]) == ["t1", "t2", "t3"] and doc["ok"]

    assert len(site.factor.prompts()) == 1, site.factor.prompts()  # one code typed, for the bastion
    assert site.second_factors() == {"bastion": 1, "t1": 0, "t2": 0, "t3": 0}
    # ... and one login per hop in all: every run, upload, tunnel and fleet member rode the masters.
    assert {name: site.key_logins(name) - before[name] for name in before} == {"t1": 1, "t2": 1, "t3": 1}
    assert partial(site.servers["bastion"]) == 1
    status = site.fab("status").ok().stdout
    assert "login: live to bastion, t1" in status


def test_after_logout_a_run_without_a_terminal_names_the_hop_that_needs_login(bastion_site: Site) -> None:
    site = bastion_site
    site.fab("status").ok()  # logged in (again, if an earlier test logged out)
    out = site.fab("logout").ok().stdout
    assert "logout: closed the login to" in out and "bastion" in out
    prompts = len(site.factor.prompts())
    started = time.monotonic()
    failed = site.fab("status", askpass=False, timeout=60)
    took = time.monotonic() - started
    assert failed.returncode == 1, failed.output
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bastion" in lines[0] and "login" in lines[0], failed.stderr
    assert "Password" not in failed.output and "Traceback" not in failed.output
    assert took < 10, took
    assert len(site.factor.prompts()) == prompts  # nothing was asked
    # With the terminal's stand-in back, `login` asks once and runs go on.
    logged = site.fab("login").ok().stdout
    assert "login: bastion: logged in now" in logged
    assert len(site.factor.prompts()) == prompts + 1
    site.fab("status").ok()
    assert len(site.factor.prompts()) == prompts + 1


def test_a_dropped_login_makes_the_background_tunnel_wait_for_login_not_retry(bastion_site: Site) -> None:
    """The masters go away under a background tunnel (a network cut, a suspended laptop): where a hop wants a
    second factor, its supervisor says "login needed" and does not knock again; `login` brings it back."""
    site = bastion_site
    site.fab("login").ok()
    if "running: pid" not in site.fab("status").ok().stdout:
        site.fab("serve").ok()
    opened = site.fab("tunnel", "--background", "--local-port", str(free_port())).ok()
    url = next(line.split("open: ", 1)[1] for line in opened.stdout.splitlines() if "open: " in line)
    api = url.replace("/lab?", "/api/contents?")
    try:
        assert http_status(api) == 200
        prompts, attempts = len(site.factor.prompts()), partial(site.servers["bastion"])
        sockets = control_dir({"XDG_STATE_HOME": str(site.state)})
        for path in sockets.iterdir():  # every master ends, as when the network drops
            if path.name != "login.lock":
                subprocess.run(["ssh", "-S", str(path), "-O", "exit", "x"], capture_output=True, timeout=30)
        state_file = site.state / "labhop" / "tunnel-t1.state"
        deadline = time.monotonic() + 30
        state: dict = {}
        while time.monotonic() < deadline:
            state = json.loads(state_file.read_text()) if state_file.exists() else {}
            if state.get("state") == "login needed":
                break
            time.sleep(0.2)
        assert state.get("state") == "login needed", state
        time.sleep(3)  # it waits: no more logins tried at the bastion than the one that found it needs a person
        assert partial(site.servers["bastion"]) == attempts + 1
        assert len(site.factor.prompts()) == prompts  # nobody was asked
        site.fab("login").ok()
        assert len(site.factor.prompts()) == prompts + 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and http_status_or_none(api) != 200:
            time.sleep(0.3)
        assert http_status_or_none(api) == 200  # the tunnel came back by itself
    finally:
        site.fab("tunnel", "--close", askpass=False, timeout=60)


def http_status_or_none(url: str) -> int | None:
    try:
        return http_status(url, timeout=5)
    except OSError:
        return None


@pytest.fixture(scope="module")
def target_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = Site(tmp_path_factory.mktemp("2fa-target"), bastion_2fa=False, target_2fa=True)
    try:
        yield site
    finally:
        site.stop()


def test_2fa_on_the_target_only(target_site: Site) -> None:
    site = target_site
    logged = site.fab("login").ok().stdout
    assert "login: bastion: logged in now" in logged and "login: t1: logged in now" in logged
    for _ in range(2):
        assert "not running" in site.fab("status").ok().stdout
    site.fab("provision", "--dry-run").ok()
    assert len(site.factor.prompts()) == 1
    assert site.second_factors() == {"bastion": 0, "t1": 1, "t2": 0, "t3": 0}
    site.fab("logout").ok()
    failed = site.fab("status", askpass=False, timeout=60)
    assert failed.returncode == 1
    line = failed.stderr.strip()
    assert "\n" not in line and "t1" in line and "login" in line and "bastion (" not in line, line


def test_a_master_the_user_runs_from_ssh_config_is_used_as_it_is(tmp_path: Path) -> None:
    ok, why = second_factor_possible()
    need(ok, why)
    factor = make_second_factor(tmp_path / "2fa")
    server = start_sshd_2fa(tmp_path, "solo", factor)
    try:
        base = write_ssh_config(tmp_path / "base_config", [server])
        socket_path = tmp_path / "user-cm"
        config = tmp_path / "ssh_config"
        config.write_text(f"Host solo\n    ControlMaster auto\n    ControlPath {socket_path}\n    ControlPersist 120\n"
                          + base.read_text())
        env = {**factor.askpass_env(), "XDG_STATE_HOME": str(tmp_path / "state")}
        started = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=no", "-f", "-N", "solo"],
                                 env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
                                 start_new_session=True, stdin=subprocess.DEVNULL)
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 10  # sshd may log the login a moment after ssh -f returned
        while accepted(server) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(factor.prompts()) == 1 and accepted(server) == 1
        ws = Workspace(root=tmp_path, inventory=tmp_path / "inventory.toml", ssh_config=config)
        ws.write_inventory('[defaults]\nprefix = "~/.labhop-2fa"\n')
        for _ in range(2):  # no terminal, no askpass: only the user's master can get this run in
            out = ws.fab("status", host="solo", env={"XDG_STATE_HOME": str(tmp_path / "state")}, detach=True).ok()
            assert "not running" in out.stdout and "login: live to solo" in out.stdout
        assert len(factor.prompts()) == 1 and accepted(server) == 1
        sockets = control_dir({"XDG_STATE_HOME": str(tmp_path / "state")})
        assert not [p for p in sockets.iterdir() if p.name != "login.lock"]  # no master of labhop's own
        out = ws.fab("logout", host="solo", env={"XDG_STATE_HOME": str(tmp_path / "state")}, detach=True).ok()
        assert "no login was open" in out.stdout  # the user's master is theirs to close
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", "solo"], capture_output=True, timeout=30)
    finally:
        server.stop()


def test_paramiko_fallback_asks_no_bare_prompt_without_a_terminal(target_site: Site) -> None:
    """LABHOP_TRANSPORT=paramiko (as without OpenSSH): no `Password:` on stdout, no hang; one line, exit 1."""
    site = target_site
    started = time.monotonic()
    result = site.ws.fab("status", host="t1", env={"XDG_STATE_HOME": str(site.state), "LABHOP_TRANSPORT": "paramiko"},
                         detach=True, timeout=120)
    assert result.returncode == 1, result.output
    assert time.monotonic() - started < 30
    assert "Password" not in result.output and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("labhop: SSH through paramiko") and len(lines) == 2, result.stderr
    assert "t1" in lines[1] and "more than a key" in lines[1] and "no terminal" in lines[1], lines[1]
