"""Helpers for integration tests: run `fab` the way a user does, against a test host."""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pytest

from tests.harness.sshd import free_port as free_port  # one definition, used by most tests from here

REPO = Path(__file__).resolve().parents[1]
FAB = shutil.which("fab") or str(Path(sys.executable).with_name("fab"))


def need(condition: bool, why: str) -> None:
    """Skip when a prerequisite is missing, except under CI=true where that is a failure."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"cannot run under CI: {why}")
    pytest.skip(why)


_CACHE: list[Path] = []


def controller_cache() -> Path:
    """The controller-side cache for this test session (LABHOP_TEST_CACHE_DIR keeps one across sessions)."""
    if not _CACHE:
        if os.environ.get("LABHOP_TEST_CACHE_DIR"):
            _CACHE.append(Path(os.environ["LABHOP_TEST_CACHE_DIR"]))
        else:
            _CACHE.append(Path(tempfile.mkdtemp(prefix="labhop-test-cache-")))
            atexit.register(shutil.rmtree, _CACHE[0], True)
    return _CACHE[0]


_STATE: list[Path] = []


def controller_state() -> Path:
    """XDG_STATE_HOME for this test session's runs that name none: labhop's masters and tunnel records
    stay out of the real ~/.local/state; the masters still up at the end are closed."""
    if not _STATE:
        _STATE.append(Path(tempfile.mkdtemp(prefix="lh-state-")))  # short: control sockets live below it
        atexit.register(_close_masters_and_remove, _STATE[0])
    return _STATE[0]


def _close_masters_and_remove(state: Path) -> None:
    from labhop.ssh.master import control_dir

    for sock in control_dir({"XDG_STATE_HOME": str(state)}).glob("*"):
        if sock.is_socket():
            subprocess.run(["ssh", "-S", str(sock), "-O", "exit", "x"], capture_output=True, timeout=10,
                           stdin=subprocess.DEVNULL, check=False)
    shutil.rmtree(state, ignore_errors=True)


@dataclass
class FabResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def ok(self) -> "FabResult":
        assert self.returncode == 0, f"fab {' '.join(self.args)} exited {self.returncode}:\n{self.output}"
        return self


@dataclass
class Workspace:
    """A controller-side directory with an inventory and (optionally) an ssh_config for `fab -S`."""

    root: Path
    inventory: Path
    ssh_config: Optional[Path] = None
    home: Optional[Path] = None  # controller HOME for local (no -H) runs

    def write_inventory(self, body: str) -> None:
        self.inventory.write_text(textwrap.dedent(body))

    def env(self, extra: Optional[dict[str, str]] = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABHOP_")}
        if self.inventory.exists():  # a LABHOP_INVENTORY naming a missing file is an error
            env["LABHOP_INVENTORY"] = str(self.inventory)
        # Wheelhouses for offline targets (and pip's downloads for them): once per session, not in ~/.cache.
        env["LABHOP_CACHE_DIR"] = str(controller_cache())
        env["PIP_CACHE_DIR"] = str(controller_cache() / "pip")
        if self.home is not None:
            env["HOME"] = str(self.home)
        else:
            env["XDG_STATE_HOME"] = str(controller_state())
        env.update(extra or {})
        return env

    def fab(self, *args: str, host: Optional[str] = None, env: Optional[dict[str, str]] = None,
            timeout: float = 600, stdin: Optional[str] = None, detach: bool = False) -> FabResult:
        """``detach``: in a session of its own, without a controlling terminal (as cron or CI runs it)."""
        argv = [FAB, "-r", str(REPO)]
        if self.ssh_config is not None:
            argv += ["-S", str(self.ssh_config)]
        if host:
            argv += ["-H", host]
        argv += list(args)
        proc = subprocess.run(argv, cwd=self.root, env=self.env(env), capture_output=True, text=True,
                              timeout=timeout, input=stdin if stdin is not None else "", start_new_session=detach)
        return FabResult(list(args), proc.returncode, proc.stdout, proc.stderr)


def one_line_refusal(result: FabResult, *words: str) -> str:
    """Exit 1, no traceback, and the error is a single line on stderr holding each of ``words``."""
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def http_status(url: str, *, timeout: float = 10) -> int:
    import ssl
    import urllib.error
    import urllib.request

    context = ssl._create_unverified_context()
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def login(base_url: str, password: str, *, timeout: float = 10) -> tuple[int, int]:
    """POST the Jupyter login form; returns (login status, status of an authenticated API call)."""
    import http.cookiejar
    import ssl
    import urllib.error
    import urllib.parse
    import urllib.request

    jar = http.cookiejar.CookieJar()
    context = ssl._create_unverified_context()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar),
                                         urllib.request.HTTPSHandler(context=context))
    opener.open(f"{base_url}/login", timeout=timeout).read()
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    data = urllib.parse.urlencode({"password": password, "_xsrf": xsrf}).encode()
    try:
        login_status = opener.open(f"{base_url}/login?next=/api/status", data, timeout=timeout).status
    except urllib.error.HTTPError as exc:
        return exc.code, 0
    try:
        api_status = opener.open(f"{base_url}/api/contents", timeout=timeout).status
    except urllib.error.HTTPError as exc:
        api_status = exc.code
    return login_status, api_status


def ssh(config: Path, host: str, command: Sequence[str] | str, *, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command on a test host with the system OpenSSH client (checks done behind labhop's back)."""
    remote = command if isinstance(command, str) else " ".join(command)
    return subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", host, remote],
                          capture_output=True, text=True, timeout=timeout)
