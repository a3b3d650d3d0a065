"""The whole flow on the local machine (no -H): what a newcomer with no server runs."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.support import Workspace, free_port, http_status

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("local")
    home = root / "home"
    home.mkdir()
    (home / ".profile").write_text("")
    ws = Workspace(root=root, inventory=root / "inventory.toml", home=home)
    port = free_port()
    ws.write_inventory(f"""
        [defaults]
        prefix = "{root}/prefix"
        bin_dir = "{root}/bin"
        root_dir = "{root}"
        port = {port}
    """)
    yield ws, port
    ws.fab("stop")


def test_local_provision_serve_status_stop(local) -> None:
    ws, port = local
    first = ws.fab("provision").ok()
    assert "changed  install jupyterlab, bcrypt, rmate" in first.stdout
    second = ws.fab("provision").ok()
    assert "provision: nothing to do" in second.stdout

    served = ws.fab("serve").ok()
    url = served.stdout.strip().splitlines()[-1].split("open: ", 1)[1]
    assert url.startswith(f"http://127.0.0.1:{port}/lab?token=")
    token = url.split("token=", 1)[1]
    assert http_status(f"http://127.0.0.1:{port}/api/contents?token={token}") == 200
    assert http_status(f"http://127.0.0.1:{port}/api/contents") == 403

    config = Path(ws.root, "prefix", "jupyter", "jupyter_server_config.py")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(ws.root, "prefix").stat().st_mode) == 0o700

    status = json.loads(ws.fab("status", "--json").ok().stdout)["results"][0]
    assert status["running"] is True and status["port"] == port and status["variant"] == "localhost"
    assert status["url"] == url
    assert os.path.exists(f"/proc/{status['pid']}")

    again = ws.fab("serve").ok()
    assert "already running with this config" in again.stdout
    assert json.loads(ws.fab("status", "--json").ok().stdout)["results"][0]["pid"] == status["pid"]
    assert ws.fab("url").ok().stdout.strip() == url

    assert "Jupyter Server" in ws.fab("logs", "--lines", "200").ok().stdout

    ws.fab("stop").ok()
    assert not os.path.exists(f"/proc/{status['pid']}")
    assert json.loads(ws.fab("status", "--json").ok().stdout)["results"][0]["running"] is False
    assert "not running" in ws.fab("stop").ok().stdout
