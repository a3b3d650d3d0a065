"""The core flow over a real OpenSSH sshd: provision, serve (both variants), status, stop."""
from __future__ import annotations

import json

import pytest

from tests.support import Workspace, free_port, http_status, login, ssh

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def remote(sshd_server, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("core-ssh")
    ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=sshd_server.ssh_config)
    port = free_port()
    prefix = f"{sshd_server.home}/.labhop-core"
    ws.write_inventory(f"""
        [hosts.target]
        port = {port}
        prefix = "{prefix}"
    """)
    yield ws, port, sshd_server
    ws.fab("stop", host="target")


def test_provision_is_idempotent_and_rmate_is_on_the_login_path(remote) -> None:
    ws, _, server = remote
    first = ws.fab("provision", host="target").ok()
    assert "changed  create virtual environment" in first.stdout
    assert "changed  install jupyterlab, bcrypt, rmate" in first.stdout
    second = ws.fab("provision", host="target").ok()
    assert "provision: nothing to do" in second.stdout
    assert "changed" not in second.stdout
    # Other test modules share this sshd's HOME (and may put their own bin_dir first on the
    # login PATH), so check our link and that a login shell finds a working rmate.
    link = ssh(server.ssh_config, "target", f"readlink {server.home}/.local/bin/rmate")
    assert link.stdout.strip() == f"{server.home}/.labhop-core/venv/bin/rmate", link.stderr
    login_path = ssh(server.ssh_config, "target", "bash -lc 'echo $PATH'").stdout.strip().split(":")
    assert f"{server.home}/.local/bin" in login_path
    found = ssh(server.ssh_config, "target", "bash -lc 'rmate --version'")
    assert found.returncode == 0, found.stderr
    assert "rmate" in found.stdout.lower()


def test_serve_localhost_token(remote) -> None:
    ws, port, _ = remote
    out = ws.fab("serve", host="target").ok().stdout
    url = out.strip().splitlines()[-1].split("open: ", 1)[1]
    token = url.split("token=", 1)[1]
    assert url == f"http://127.0.0.1:{port}/lab?token={token}"
    assert http_status(f"http://127.0.0.1:{port}/api/contents?token={token}") == 200
    assert http_status(f"http://127.0.0.1:{port}/api/contents") == 403

    status = json.loads(ws.fab("status", "--json", host="target").ok().stdout)["results"][0]
    assert status == {**status, "running": True, "port": port, "variant": "localhost", "url": url, "host": "target"}

    again = ws.fab("serve", host="target").ok().stdout
    assert "already running with this config" in again
    assert json.loads(ws.fab("status", "--json", host="target").ok().stdout)["results"][0]["pid"] == status["pid"]


def test_serve_public_password_login(remote) -> None:
    ws, port, _ = remote
    env = {"LABHOP_PASSWORD": PASSWORD}
    out = ws.fab("serve", "--public", "--insecure-http", host="target", env=env)
    if "--insecure-http" in out.stderr and "No idea what" in out.stderr:  # before TLS support existed
        out = ws.fab("serve", "--public", host="target", env=env)
    out.ok()
    assert "restart: stop JupyterLab (config changed)" in out.stdout
    base = f"http://127.0.0.1:{port}"
    assert http_status(f"{base}/api/contents") == 403
    assert login(base, PASSWORD) == (200, 200)
    assert login(base, "wrong password")[0] == 401
    assert PASSWORD not in out.output

    status = json.loads(ws.fab("status", "--json", host="target").ok().stdout)["results"][0]
    assert status["variant"] == "public" and status["running"] is True


def test_stop_is_idempotent(remote) -> None:
    ws, port, _ = remote
    ws.fab("stop", host="target").ok()
    assert json.loads(ws.fab("status", "--json", host="target").ok().stdout)["results"][0]["running"] is False
    assert "not running" in ws.fab("stop", host="target").ok().stdout
    with pytest.raises(OSError):
        import socket
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
