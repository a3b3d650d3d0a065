"""Online installs at uv's speed: uv brought over SSH, the target's pip configuration honoured,
pip only when uv cannot run there.

A real sshd of its own (its home is this module's alone: the pip.conf written there must not
reach other modules' targets) on loopback, whose sessions reach PyPI the way this machine does
(through its TLS-terminating proxy when there is one: uv must then use the system trust store and
pip's `cert`). The target's ~/.config/pip/pip.conf points index-url at a local index that logs
each request and redirects it to PyPI, and extra-index-url at one that logs and knows nothing:
both logs prove that the installer read that file. /etc/pip.conf and /etc/xdg/pip/pip.conf of
this machine (cert, constraint) apply on top, as they would for pip.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness.sshd import SshServer, start_sshd, write_ssh_config
from tests.support import Workspace, controller_cache, ssh

pytestmark = pytest.mark.integration

TARGET_PYTHON = "/usr/bin/python3"


class Index:
    """A local package index on 127.0.0.1 that records each request; ``upstream``: redirect each one
    there (PyPI's simple pages link their files absolutely), else answer 404 (knows no project)."""

    def __init__(self, upstream: str = "") -> None:
        self.requests: list[str] = []
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                index.requests.append(self.path)
                if upstream:
                    self.send_response(302)
                    self.send_header("Location", upstream + self.path.split("/simple", 1)[-1])
                else:
                    self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def asked_for(self, project: str) -> bool:
        return any(path.rstrip("/").endswith(f"/simple/{project}") for path in self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Online:
    ws: Workspace
    server: SshServer
    mirror: Index
    extra: Index

    def prefix(self, name: str) -> str:
        return f"{self.server.home}/.labhop-{name}"

    def on_target(self, command: str, timeout: float = 60):
        return ssh(self.server.ssh_config, "online", command, timeout=timeout)


@pytest.fixture(scope="module")
def online(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Online]:
    root = tmp_path_factory.mktemp("online-uv")
    server = start_sshd(root, "online")
    mirror, extra = Index(upstream="https://pypi.org/simple"), Index()
    try:
        server.ssh_config = write_ssh_config(root / "ssh_config", [server])
        ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=server.ssh_config)
        hosts = "".join(f'\n[hosts.{name}]\nhostname = "online"\npython = "{TARGET_PYTHON}"\n'
                        f'prefix = "{server.home}/.labhop-{name}"\nbin_dir = "{server.home}/.local/bin-{name}"\n'
                        for name in ("online", "fallback"))
        ws.write_inventory(hosts)
        conf = server.home / ".config" / "pip" / "pip.conf"
        conf.parent.mkdir(parents=True)
        conf.write_text(f"[global]\nindex-url = {mirror.url}\nextra-index-url = {extra.url}\n")
        yield Online(ws, server, mirror, extra)
    finally:
        mirror.close()
        extra.close()
        server.stop()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_cold_online_provision_installs_with_uv_brought_over_ssh(online: Online) -> None:
    out = online.ws.fab("provision", host="online", timeout=900).ok().stdout
    prefix, own_uv = online.prefix("online"), f"{online.prefix('online')}/bin/uv"
    assert re.search(rf"changed  push 1 of 1 wheels \([\d.]+ MB\) to {prefix}/wheelhouse", out), out
    assert f"changed  unpack uv from its wheel to {own_uv} (it runs here)" in out
    assert re.search(rf"changed  create virtual environment {prefix}/venv with Python [\d.]+ \(uv\)", out), out
    install = re.search(rf"changed  install jupyterlab, bcrypt, rmate into {prefix}/venv from (\S+) "
                        rf"with uv ([\d.]+) \(brought over SSH\)", out)
    assert install, out
    assert install.group(1) == online.mirror.url  # the index the target's pip.conf names
    # The uv that ran is the binary from the controller's cached wheel, pushed over SSH: not one
    # pip-installed on the target (none in the venv), not one from the target's PATH.
    manifests = [json.loads(p.read_text()) for p in (controller_cache() / "wheelhouse").glob("*/manifest.json")]
    manifest = next(m for m in manifests if m["requirements"] == ["uv"])
    wheel = controller_cache() / "wheelhouse" / manifest["key"] / manifest["uv_wheel"]
    with zipfile.ZipFile(wheel) as z:
        binary = z.read(next(n for n in z.namelist() if n.endswith(".data/scripts/uv")))
    pushed = online.on_target(f"sha256sum {own_uv} && {own_uv} --version")
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.split()[0] == sha256(binary)
    assert pushed.stdout.splitlines()[1].startswith(f"uv {install.group(2)}")
    in_venv = online.on_target(f"ls {prefix}/venv/bin {prefix}/venv/lib/python3*/site-packages")
    assert in_venv.returncode == 0 and "jupyterlab" in in_venv.stdout, in_venv.stderr
    assert not [n for n in in_venv.stdout.split() if n == "uv" or n.startswith("uv-")], in_venv.stdout
    # Both indexes of the target's pip.conf were asked: uv read pip's configuration.
    assert online.mirror.asked_for("jupyterlab") and online.mirror.asked_for("bcrypt"), online.mirror.requests
    assert online.extra.asked_for("jupyterlab"), online.extra.requests
    works = online.on_target(f"{prefix}/venv/bin/python -c 'import jupyterlab, bcrypt; print(jupyterlab.__version__)'")
    assert works.returncode == 0 and works.stdout.strip().startswith("4."), works.stderr

    again = online.ws.fab("provision", host="online").ok().stdout
    assert "provision: nothing to do" in again and "  changed  " not in again


def test_an_interrupted_online_install_is_finished_by_the_next_run(online: Online) -> None:
    """The completion mark: an install whose mark is gone (killed before it wrote it) runs again,
    with the uv already there (nothing pushed)."""
    prefix = online.prefix("online")
    assert online.on_target(f"rm {prefix}/venv/.labhop-installed").returncode == 0
    out = online.ws.fab("provision", host="online", timeout=900).ok().stdout
    assert "push " not in out and "unpack uv" not in out
    assert re.search(r"changed  install jupyterlab, bcrypt, rmate into \S+ from \S+ \(the last install did not "
                     r"finish\) with uv [\d.]+ \(brought over SSH\)", out), out
    again = online.ws.fab("provision", host="online").ok().stdout
    assert "provision: nothing to do" in again


def test_pip_installs_when_uv_cannot_run_on_the_target(online: Online, tmp_path: Path) -> None:
    """The controller's uv wheel holds a binary the target cannot execute (as a wrong-architecture
    uv would be): the unpack says so, the venv comes from Python and pip installs, from the same
    pip.conf indexes."""
    cache = tmp_path / "cache"
    env = {"LABHOP_CACHE_DIR": str(cache)}
    dry = online.ws.fab("provision", "--dry-run", host="fallback", env=env).ok().stdout
    found = re.search(r"uv for .+: not cached yet; a real run downloads it in (\S+)", dry)
    assert found, dry
    directory = Path(found.group(1))
    directory.mkdir(parents=True)
    name = "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    with zipfile.ZipFile(directory / name, "w") as z:
        z.writestr("uv-0.13.9.data/scripts/uv", b"\x7fELF\x02\x01\x01" + bytes(57))  # not loadable
    data = (directory / name).read_bytes()
    (directory / "manifest.json").write_text(json.dumps({
        "key": directory.name, "requirements": ["uv"], "signature": None, "uv_wheel": name,
        "wheels": [[name, len(data), sha256(data)]]}))
    before = len(online.mirror.requests)

    out = online.ws.fab("provision", host="fallback", env=env, timeout=1200).ok().stdout
    prefix = online.prefix("fallback")
    assert re.search(rf"changed  unpack uv from its wheel to {prefix}/bin/uv \(it does not run here, pip installs "
                     rf"instead: .*Exec format error", out), out
    assert re.search(rf"changed  create virtual environment {prefix}/venv with Python [\d.]+ \(venv\)", out), out
    assert re.search(rf"changed  install jupyterlab, bcrypt, rmate into {prefix}/venv from \S+ with pip "
                     rf"\(uv does not run here\)", out), out
    assert online.mirror.asked_for("jupyterlab") and len(online.mirror.requests) > before  # pip read pip.conf
    works = online.on_target(f"{prefix}/venv/bin/python -c 'import jupyterlab, bcrypt' && ls {prefix}/bin")
    assert works.returncode == 0 and "uv" not in works.stdout.split(), works.stderr + works.stdout
    again = online.ws.fab("provision", host="fallback", env=env).ok().stdout
    assert "provision: nothing to do" in again
