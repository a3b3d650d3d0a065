"""The whole flow on the local machine (no -H): what a newcomer with no server runs."""
from __future__ import annotations

import json
import os
import re
import stat
import time
import urllib.request
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
    # The lock made the prefix: one line says so, no "exists" after it, and the summary counts the lines.
    prefix = Path(ws.root, "prefix")
    lines = first.stdout.splitlines()
    about_prefix = [line for line in lines if str(prefix) + " " in line or line.endswith(str(prefix))]
    assert len(about_prefix) == 1 and re.fullmatch(rf"\[local\]   changed  create {re.escape(str(prefix))} "
                                                   rf"\(0700\) \(\d+\.\ds\)", about_prefix[0]), about_prefix
    changed = sum("  changed  " in line for line in lines)
    unchanged = sum("  ok       " in line for line in lines)
    assert re.search(rf"provision: {changed} changed, {unchanged} unchanged \(", first.stdout), first.stdout
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
    # The URL it had, and exit 1: there is nothing to open.
    gone = ws.fab("url")
    assert gone.returncode == 1
    assert gone.stderr.strip() == (f"labhop: local: JupyterLab is not running (it was at {url}): "
                                   f"`fab serve` starts it again")


def start_kernel(port: int, token: str) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/kernels?token={token}", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 201
        return json.loads(response.read())["id"]


def test_live_kernels_a_missing_root_dir_and_a_start_that_dies(local) -> None:
    ws, port = local
    config = Path(ws.root, "prefix", "jupyter", "jupyter_server_config.py")
    before = config.read_text() if config.exists() else None
    started = time.monotonic()
    missing = ws.fab("serve", "--root-dir", "/nonexistent-labhop")
    assert missing.returncode == 2 and time.monotonic() - started < 5
    assert missing.stderr.strip() == ("labhop: local: root dir /nonexistent-labhop is not a directory on the target: "
                                      "create it, or name another with --root-dir")
    assert (config.read_text() if config.exists() else None) == before  # nothing written

    url = ws.fab("serve").ok().stdout.strip().splitlines()[-1].split("open: ", 1)[1]
    token = url.split("token=", 1)[1]
    pid = json.loads(ws.fab("status", "--json").ok().stdout)["results"][0]["pid"]
    start_kernel(port, token)
    other = free_port()
    refused = ws.fab("serve", "--port", str(other))
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith(f"serve would restart JupyterLab (pid {pid}) to change port {port} -> "
                                           f"{other}, and its 1 running kernel would be lost; nothing was changed: "
                                           f"add --restart to do it")
    assert json.loads(ws.fab("status", "--json").ok().stdout)["results"][0]["pid"] == pid  # nothing stopped
    assert http_status(f"http://127.0.0.1:{port}/api/kernels?token={token}") == 200
    # Not naming the port again is not a change: the quick start leaves it alone.
    assert "already running with this config" in ws.fab("serve").ok().stdout

    ws.fab("serve", "--port", str(other), "--restart").ok()
    assert json.loads(ws.fab("status", "--json").ok().stdout)["results"][0]["port"] == other
    ws.fab("stop").ok()

    # A server that dies at start (here: the venv's jupyter gone) is reported within seconds, with its output.
    lab = Path(ws.root, "prefix", "venv", "bin", "jupyter")
    lab.rename(lab.with_name("jupyter.away"))
    try:
        started = time.monotonic()
        died = ws.fab("serve")
        assert died.returncode == 1 and time.monotonic() - started < 20, died.stderr
        assert "JupyterLab exited during start-up; log tail:" in died.stderr
        tail = died.stderr.split("log tail:", 1)[1]  # the start's own words, from the log
        assert str(lab) in tail and "No such file or directory" in tail, tail
    finally:
        lab.with_name("jupyter.away").rename(lab)
    ws.fab("serve").ok()
