"""The --public password and its bcrypt hash never show: not in any process's command line on this
machine (controller and target alike), not in fab's output, not in a log or a state file; and the
files that hold secrets are 0600 in 0700 directories.

A sampler thread reads every /proc/*/cmdline over and over while provision, serve, status, url,
logs, a tunnel and stop run against a real sshd. A canary (a short-lived process that does carry
the password in its argv) proves the sampler would have seen it.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess
import threading
import time
from typing import Iterator

import pytest

from tests.support import FAB, FabResult, Workspace, free_port, login

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-Sampler-7f2a"
NEW_PASSWORD = "an0ther-Sampler-91c4"


class CmdlineSampler(threading.Thread):
    """Every distinct command line seen on the machine while running; and the command lines of
    processes whose environment holds ``env_secret`` (only fab itself should: the user put it there)."""

    def __init__(self, env_secret: bytes) -> None:
        super().__init__(daemon=True)
        self.seen: set[str] = set()
        self.env_holders: set[str] = set()
        self.env_secret = env_secret
        self.rounds = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        raw = f.read()
                except OSError:  # gone meanwhile
                    continue
                if not raw:
                    continue
                cmdline = raw.replace(b"\0", b" ").decode("utf-8", "replace")
                self.seen.add(cmdline)
                try:
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        if self.env_secret in f.read():
                            self.env_holders.add(cmdline)
                except OSError:
                    pass
            self.rounds += 1
            time.sleep(0.002)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def containing(self, needle: str) -> list[str]:
        return [cmd for cmd in self.seen if needle in cmd]


@pytest.fixture(scope="module")
def scene(sshd_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A host known only to inventory.toml, reached with the controller's (throwaway) HOME:
    its ~/.ssh/known_hosts is the file both labhop and the tunnel's ssh must use."""
    root = tmp_path_factory.mktemp("secrets")
    home = root / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".ssh" / "known_hosts").write_text(sshd_server.known_hosts_line + "\n")
    ws = Workspace(root=root, inventory=root / "inventory.toml", home=home)
    port = free_port()
    prefix = f"{sshd_server.home}/.labhop-secrets"
    ws.write_inventory(f"""
        [hosts.box]
        hostname = "{sshd_server.address}"
        ssh_port = {sshd_server.port}
        user = "{sshd_server.user}"
        identity_file = "{sshd_server.identity_file}"
        port = {port}
        prefix = "{prefix}"
    """)
    password_file = root / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    sampler = CmdlineSampler(env_secret=f"LABHOP_PASSWORD={PASSWORD}".encode())
    sampler.start()
    runs: list[FabResult] = []

    def fab(*args: str, env: dict | None = None) -> FabResult:
        result = ws.fab(*args, host="box", env=env)
        runs.append(result)
        return result

    data = {"ws": ws, "home": home, "port": port, "prefix": prefix, "server": sshd_server, "fab": fab,
            "runs": runs, "sampler": sampler, "password_file": password_file}
    try:
        yield data
    finally:
        sampler.stop()
        ws.fab("tunnel", "--close", host="box")
        ws.fab("stop", host="box")


def target_text(scene: dict, command: str) -> str:
    result = ssh_direct(scene, command)
    assert result.returncode == 0, result.stderr
    return result.stdout


def ssh_direct(scene: dict, command: str) -> subprocess.CompletedProcess:
    server = scene["server"]
    return subprocess.run(["ssh", *server.ssh_options(), server.address, command], capture_output=True, text=True,
                          timeout=60)


def test_every_task_runs_without_showing_a_secret(scene) -> None:
    fab, port = scene["fab"], scene["port"]
    fab("provision").ok()
    fab("serve", "--public", "--password-file", str(scene["password_file"])).ok()
    fab("serve", "--public", env={"LABHOP_PASSWORD": PASSWORD}).ok()  # same password: nothing changes
    base = f"https://127.0.0.1:{port}"
    assert login(base, PASSWORD) == (200, 200)
    fab("status").ok()
    fab("url").ok()
    fab("logs", "--lines", "500").ok()

    local_port = free_port()
    opened = fab("tunnel", "--background", "--local-port", str(local_port), env={"LABHOP_PASSWORD": PASSWORD}).ok()
    assert str(local_port) in opened.output
    assert login(f"https://127.0.0.1:{local_port}", PASSWORD) == (200, 200)
    fab("tunnel", "--close").ok()

    # A new password: a new hash travels to the target, the server restarts with it.
    changed = fab("serve", "--public", env={"LABHOP_PASSWORD": NEW_PASSWORD}).ok()
    assert "restart" in changed.stdout
    assert login(base, NEW_PASSWORD) == (200, 200) and login(base, PASSWORD)[0] == 401

    # The canary: a process that does carry the password in its argv for 0.3 s is seen.
    subprocess.run(["sh", "-c", "sleep 0.3", "canary", f"canary-{PASSWORD}"], check=True)
    time.sleep(0.05)
    fab("stop").ok()
    scene["hashes"] = hashes_on_target(scene)


def hashes_on_target(scene: dict) -> list[str]:
    config = target_text(scene, f"cat {scene['prefix']}/jupyter/jupyter_server_config.py")
    return re.findall(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}", config)


def test_the_sampler_saw_the_run_and_would_have_seen_a_secret(scene) -> None:
    sampler: CmdlineSampler = scene["sampler"]
    assert sampler.rounds > 100
    assert sampler.containing(f"canary-{PASSWORD}"), "the sampler misses short-lived processes"
    # it saw the controller's fab runs, the target-side commands and the server itself
    assert sampler.containing(" -H box ")
    assert any("jupyter" in cmd and " lab" in cmd for cmd in sampler.seen)
    # the target-side write of the config (the hash on its stdin) ran while sampled
    assert sampler.containing("jupyter_server_config.py.labhop-tmp"), "the config write was not sampled"
    # the tunnel: its forward held in the target's OpenSSH master by hold.py (`ssh -O forward -L ...`),
    # or a plain `ssh -N -L` on the paramiko path
    assert any("tunnel/hold.py" in cmd or (cmd.startswith("ssh ") and "-L" in cmd) for cmd in sampler.seen), \
        "no tunnel process seen"


def test_no_command_line_carries_the_password_or_a_hash(scene) -> None:
    sampler: CmdlineSampler = scene["sampler"]
    hashes = scene["hashes"]
    assert len(hashes) == 1  # the current one; the earlier hash is checked through the logs below
    secrets = [PASSWORD, NEW_PASSWORD, *hashes, hashes[0][7:29]]  # the salt alone too
    for secret in secrets:
        leaks = [cmd for cmd in sampler.containing(secret) if "canary" not in cmd]
        assert leaks == [], f"{secret[:6]}... in a command line: {leaks[0][:200]}"


def test_only_fab_itself_holds_the_password_in_its_environment(scene) -> None:
    """$LABHOP_PASSWORD is the user's choice for fab; nothing labhop starts (the background
    tunnel's ssh, which outlives fab) keeps it."""
    holders = scene["sampler"].env_holders
    assert any(FAB in cmd for cmd in holders), "the sampler never saw fab's environment"
    assert [cmd for cmd in holders if FAB not in cmd] == []


def test_no_output_log_or_state_file_carries_a_secret(scene) -> None:
    hashes = scene["hashes"]
    secrets = [PASSWORD, NEW_PASSWORD, *hashes]
    for run in scene["runs"]:
        for secret in secrets:
            assert secret not in run.output, f"fab {' '.join(run.args)} printed a secret"
    # On the target: only the config holds the (current) hash; no file holds a password.
    prefix = scene["prefix"]
    for secret in secrets:
        found = ssh_direct(scene, f"grep -rlF -e {secret!r} {prefix} ~ --exclude-dir=venv --exclude-dir=.cache "
                                  f"2>/dev/null; true").stdout.split()
        allowed = {f"{prefix}/jupyter/jupyter_server_config.py"} if secret in hashes else set()
        assert set(found) <= allowed, f"{secret[:6]}... found in {found}"
    logs = target_text(scene, f"cat {prefix}/server.log {prefix}/server.log.1 2>/dev/null; true")
    assert "Jupyter Server" in logs  # really the server's log
    # On the controller: HOME (tunnel state and logs, known_hosts) and the workspace.
    for secret in secrets:
        found = subprocess.run(["grep", "-rlF", "-e", secret, str(scene["ws"].root)], capture_output=True,
                               text=True).stdout.split()
        assert found == [str(scene["password_file"])] if secret == PASSWORD else found == [], found


def test_secret_files_are_0600_and_labhop_directories_0700(scene) -> None:
    prefix = scene["prefix"]
    listing = target_text(scene, f"find {prefix} -path {prefix}/venv -prune -o -printf '%m %y %p\\n'")
    entries = [line.split(" ", 2) for line in listing.splitlines()]
    dirs = {path: mode for mode, kind, path in entries if kind == "d"}
    files = {path: mode for mode, kind, path in entries if kind == "f"}
    assert dirs and all(mode == "700" for mode in dirs.values()), dirs
    for name in ("jupyter/jupyter_server_config.py", "tls/key.pem", "server.log"):
        assert files[f"{prefix}/{name}"] == "600", (name, files)
    # Readable beyond the user (inside 0700 directories anyway): only the public certificate and
    # Jupyter's own `migrated` timestamp.
    open_files = {path[len(prefix) + 1:] for path, mode in files.items() if int(mode, 8) & 0o077}
    assert open_files <= {"tls/cert.pem", "jupyter/migrated"}, open_files
    # the controller's labhop state (tunnel records and logs)
    state = scene["home"] / ".local" / "state" / "labhop"
    assert state.is_dir() and stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in state.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
