"""The probe's facts for serve, probed for real on this machine: the free port it finds, the root
dir check, the running kernels of a server (children started with a kernel-*.json file)."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from invoke import Context

from labhop.executor import probe
from labhop.jupyter_config import ServerSettings, render
from labhop.settings import resolve_settings
from labhop.inventory import HostEntry


@pytest.fixture()
def prefix(tmp_path: Path) -> Path:
    (tmp_path / "prefix" / "jupyter").mkdir(parents=True)
    return tmp_path / "prefix"


def settings_for(prefix: Path):  # type: ignore[no-untyped-def]
    return resolve_settings(HostEntry(name="local", prefix=str(prefix), bin_dir=str(prefix / "bin"),
                                      python=sys.executable))


def held_ports(count: int) -> Iterator[list[socket.socket]]:
    """``count`` consecutive ports, all listening (another user's servers)."""
    for _ in range(50):
        first = socket.socket()
        first.bind(("127.0.0.1", 0))
        start = first.getsockname()[1]
        held = [first]
        try:
            for port in range(start + 1, start + count):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                held.append(s)
        except OSError:
            for s in held:
                s.close()
            continue
        for s in held:
            s.listen()
        return iter([held])
    raise RuntimeError("no run of free ports")


def test_the_first_free_port_from_the_remembered_one(prefix: Path) -> None:
    (held,) = list(held_ports(2))
    start = held[0].getsockname()[1]
    try:
        settings = settings_for(prefix)
        assert probe(Context(), settings, scan_from=start).free_port == start + 2
        # The config's port is where the scan starts (the port an earlier run picked).
        (prefix / "jupyter" / "jupyter_server_config.py").write_text(
            render(ServerSettings(ip="127.0.0.1", port=start + 1, root_dir="/", public=False, token="t")))
        assert probe(Context(), settings, scan_from=8888).free_port == start + 2
        # A named port is checked, not scanned.
        named = probe(Context(), settings, port=start)
        assert (named.port_free, named.free_port) == (False, None)
    finally:
        for s in held:
            s.close()


def test_the_root_dir_named_is_checked(prefix: Path, tmp_path: Path) -> None:
    settings = settings_for(prefix)
    assert probe(Context(), settings, root_dir=str(tmp_path / "nonexistent")).root_dir_exists is False
    assert probe(Context(), settings, root_dir=str(tmp_path)).root_dir_exists is True
    assert probe(Context(), settings).root_dir_exists is None


SERVER = """
import subprocess, sys, time
sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
kids = [subprocess.Popen(sleep + ["-f", sys.argv[1] + "/kernel-%d.json" % i]) for i in range(2)]
other = subprocess.Popen(sleep + ["terminal"])
print("ready", flush=True)
time.sleep(60)
"""


def test_the_kernels_of_a_running_server_are_counted(prefix: Path, tmp_path: Path) -> None:
    # Stands in for `jupyter lab`: "jupyter" in its argv, two kernel children and one that is not a kernel.
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp_path), "jupyter-lab"], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        (prefix / "server.pid").write_text(f"{server.pid}\n")
        facts = probe(Context(), settings_for(prefix))
        assert (facts.server.alive, facts.server.kernels) == (True, 2)
    finally:
        import os
        import signal
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    assert probe(Context(), settings_for(prefix)).server.kernels is None  # not running: not counted


def test_a_dangling_rmate_link_is_reported(prefix: Path, tmp_path: Path) -> None:
    (prefix / "bin").mkdir()
    (prefix / "bin" / "rmate").symlink_to(tmp_path / "deleted-prefix" / "venv" / "bin" / "rmate")
    facts = probe(Context(), settings_for(prefix))
    assert facts.rmate_link == str(tmp_path / "deleted-prefix" / "venv" / "bin" / "rmate")
    assert facts.rmate_link_dangling and not facts.rmate_link_labhop


def test_old_notebook_app_settings_on_the_servers_config_path(prefix: Path) -> None:
    etc = prefix / "venv" / "etc" / "jupyter"
    (etc / "jupyter_notebook_config.d").mkdir(parents=True)
    # What jupyterlab itself installs there: NotebookApp, but none of the settings labhop's config makes.
    (etc / "jupyter_notebook_config.d" / "jupyterlab.json").write_text(
        '{"NotebookApp": {"nbserver_extensions": {"jupyterlab": true}}}')
    assert probe(Context(), settings_for(prefix)).notebook_app_files == ()
    (etc / "jupyter_config.py").write_text("c.NotebookApp.ip = '0.0.0.0'\n")
    (etc / "jupyter_notebook_config.d" / "old.json").write_text('{"NotebookApp": {"port": 9999}}')
    assert probe(Context(), settings_for(prefix)).notebook_app_files == (
        str(etc / "jupyter_config.py"), str(etc / "jupyter_notebook_config.d" / "old.json"))
