"""An air-gapped target: provision from a wheelhouse the controller builds and pushes over SSH.

The target is the topology's (tests/harness): its network namespace has no default route, so
no package index can be reached, and it is reached only through the jump host. Its Python is
Debian's /usr/bin/python3 (3.11.2 here) while the controller runs another (3.11.7): the wheels
must be resolved for the target's full version. Cold provision, serve and an HTTP request on the
target, a no-op re-run; then a second prefix whose push is cut by killing fab, and resumed.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.support import FAB, REPO, Workspace, controller_cache, free_port, need

pytestmark = pytest.mark.integration

TARGET_PYTHON = "/usr/bin/python3"


@dataclass
class Offline:
    ws: Workspace
    topology: object
    home: Path
    port: int
    version: str  # the target python's full version

    def fab(self, *args: str, host: str = "target", timeout: float = 900):
        return self.ws.fab(*args, host=host, timeout=timeout)

    def on_target(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.topology.run("target", command, check=False, timeout=timeout)


@pytest.fixture(scope="module")
def offline(topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Offline]:
    need(topology.isolated, f"the target needs its own network namespace with no route out: {topology.reason}")
    need(Path(TARGET_PYTHON).exists(), f"no {TARGET_PYTHON} for the target")
    root = tmp_path_factory.mktemp("offline")
    home = topology.target.home
    ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=topology.ssh_config, home=root / "home")
    ws.home.mkdir()
    port = free_port()
    ws.write_inventory(f"""
        [hosts.target]
        python = "{TARGET_PYTHON}"
        port = {port}
        prefix = "{home}/.labhop-offline"
        bin_dir = "{home}/.local/bin-offline"

        [hosts.second]
        hostname = "target"
        python = "{TARGET_PYTHON}"
        prefix = "{home}/.labhop-offline-2"
        bin_dir = "{home}/.local/bin-offline-2"
    """)
    version = subprocess.run([TARGET_PYTHON, "-c", "import sys; print(*sys.version_info[:3], sep='.')"],
                             capture_output=True, text=True, check=True).stdout.strip()
    scene = Offline(ws, topology, Path(home), port, version)
    try:
        yield scene
    finally:
        ws.fab("stop", host="target", timeout=120)


def test_the_target_has_no_route_to_any_index(offline: Offline) -> None:
    routes = offline.on_target("ip route")
    assert routes.returncode == 0 and "default" not in routes.stdout
    # No packet leaves: the kernel has no route for a public address (TEST-NET-1 here).
    lookup = offline.on_target("ip route get 192.0.2.1")
    assert lookup.returncode != 0 and "unreachable" in lookup.stderr.lower(), lookup
    resolve = offline.on_target(f"{TARGET_PYTHON} -c \"import socket; socket.getaddrinfo('pypi.org', 443)\"")
    assert resolve.returncode != 0 and "gaierror" in resolve.stderr


def test_cold_provision_installs_from_a_pushed_wheelhouse(offline: Offline) -> None:
    started = time.monotonic()
    out = offline.fab("provision").ok().stdout
    seconds = time.monotonic() - started
    assert "installing without a package index: https://pypi.org/simple is unreachable from the target" in out
    assert re.search(r"changed  push \d+ of \d+ wheels", out), out
    assert "pushing " in out and " MB" in out  # progress while pushing
    assert re.search(r"changed  unpack \d+ wheel\(s\) and check their sha256", out)
    assert "changed  unpack uv from its wheel" in out
    assert "from the wheelhouse with uv, no index" in out
    # resolved for the target's interpreter, not the controller's
    assert f"wheelhouse for CPython {offline.version} (" in out
    keys = [p.name for p in (controller_cache() / "wheelhouse").iterdir() if not p.name.startswith(".")]
    assert any(k.startswith(f"cp{offline.version}-") for k in keys), keys
    venv = offline.home / ".labhop-offline" / "venv"
    code = "import sys, jupyterlab, bcrypt; print(*sys.version_info[:3], sep='.')"
    check = offline.on_target(f"{venv}/bin/python -c \"{code}\"")
    assert check.returncode == 0 and check.stdout.strip() == offline.version, check.stderr
    print(f"cold offline provision: {seconds:.1f}s (controller {sys.version.split()[0]}, target {offline.version})")


def test_serve_answers_http_on_the_target_and_reruns_change_nothing(offline: Offline) -> None:
    out = offline.fab("serve").ok().stdout
    url = re.findall(r"open: (http://\S+)", out)[-1]
    token = url.split("token=", 1)[1]
    base = f"http://127.0.0.1:{offline.port}"
    probe = ("import sys, urllib.request, urllib.error\n"
             "def status(u):\n"
             "    try: return urllib.request.urlopen(u, timeout=10).status\n"
             "    except urllib.error.HTTPError as e: return e.code\n"
             "print(status(sys.argv[1]), status(sys.argv[2]))\n")
    answer = offline.on_target(
        f"{TARGET_PYTHON} -c '{probe}' '{base}/api/contents?token={token}' '{base}/api/contents'")
    assert answer.stdout.split() == ["200", "403"], answer.stderr

    again = offline.fab("provision").ok().stdout
    assert "provision: nothing to do" in again and "  changed  " not in again
    assert "without a package index" not in again  # nothing to install: no index check, no wheelhouse
    served = offline.fab("serve").ok().stdout
    assert "serve: nothing to do" in served and "  changed  " not in served


def test_a_cut_push_resumes_and_damage_is_caught(offline: Offline) -> None:
    """Kill fab in the middle of the push (the SSH connection dies with it), flip a byte of what
    had arrived, then run again: the push resumes where it was cut, the damaged wheel is caught
    by its sha256 (the run fails saying so), and the next run resends only that wheel."""
    wheelhouse = offline.home / ".labhop-offline-2" / "wheelhouse"
    manifest = json.loads(next((controller_cache() / "wheelhouse").glob("cp*/manifest.json")).read_text())
    total = sum(size for _, size, _ in manifest["wheels"])
    argv = [FAB, "-r", str(REPO), "-S", str(offline.ws.ssh_config), "-H", "second", "provision"]
    proc = subprocess.Popen(argv, cwd=offline.ws.root, env=offline.ws.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            bundles = list(wheelhouse.glob(".bundle-*")) if wheelhouse.is_dir() else []
            if bundles and bundles[0].stat().st_size >= 5_000_000:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the push ended before it could be cut:\n{proc.stdout.read()}"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    bundle = next(wheelhouse.glob(".bundle-*"))
    cut_at, settled = -1, time.monotonic() + 30  # the target's sftp-server may still write what it had received
    while cut_at != bundle.stat().st_size and time.monotonic() < settled:
        cut_at = bundle.stat().st_size
        time.sleep(0.5)
    assert 0 < cut_at < total
    data = bytearray(bundle.read_bytes())
    data[100] ^= 0xFF  # inside the first wheel of the bundle
    bundle.write_bytes(bytes(data))

    second = offline.fab("provision", host="second", timeout=600)
    assert second.returncode == 1, second.output
    assert re.search(rf"changed  push {len(manifest['wheels'])} of {len(manifest['wheels'])} wheels "
                     rf"\([\d.]+ MB, resuming after {cut_at / 1e6:.1f} MB\)", second.stdout), second.stdout
    first = manifest["wheels"][0][0]
    assert f"1 wheel(s) arrived damaged and were removed (run again to resend them): {first}" in second.output
    assert not (wheelhouse / first).exists() and not list(wheelhouse.glob(".bundle-*"))

    third = offline.fab("provision", host="second", timeout=600).ok().stdout
    assert f"changed  push 1 of {len(manifest['wheels'])} wheels" in third
    assert "changed  unpack 1 wheel(s) and check their sha256" in third
    assert "from the wheelhouse with uv, no index" in third
    assert (wheelhouse / first).stat().st_size == manifest["wheels"][0][1]


def test_an_extra_package_travels_in_the_wheelhouse_and_the_default_kernel_imports_it(offline: Offline) -> None:
    """`--with`: the package joins the set the wheelhouse is built for (one cached build per signature and
    set); only the wheels the target lacks travel; a cell in the default kernel, run through the server's
    REST API and kernel websocket on the target itself, imports it from labhop's venv."""
    out = offline.fab("serve", "--with", "tabulate").ok().stdout
    assert "installing without a package index" in out
    pushed = re.search(r"changed  push (\d+) of (\d+) wheels", out)
    assert pushed and int(pushed.group(1)) < int(pushed.group(2)), out  # the new wheel, not the whole set again
    assert re.search(r"changed  install tabulate into \S+ from the wheelhouse with uv, no index", out), out
    assert "already running with this config" in out  # a package for the kernels restarts nothing
    url = re.findall(r"open: (http://\S+)", out)[-1]
    base, token = url.split("/lab?token=")
    client = Path(__file__).resolve().parents[1] / "harness" / "kernel.py"
    script = client.read_text() + (
        f"\nprint(run_cell({base!r}, {token!r}, 'import sys, tabulate; print(tabulate.__name__, sys.prefix)'))\n")
    venv = offline.home / ".labhop-offline" / "venv"
    ran = offline.topology.run("target", f"{venv}/bin/python -", check=False, timeout=180, input=script)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["tabulate", str(venv)], ran.stdout
    again = offline.fab("serve", "--with", "tabulate").ok().stdout
    assert "serve: nothing to do" in again and "without a package index" not in again
