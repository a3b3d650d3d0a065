"""Laptop side of tunnels: port choice, --bind, flags, the state dir and its records."""
from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from labhop.tunnel import forward as tunnel
from labhop.errors import LabhopError, UsageError


@pytest.fixture()
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "labhop"


def test_choose_local_port_takes_the_wanted_one_or_the_next_free() -> None:
    busy = {8888, 8889}
    assert tunnel.choose_local_port(9999, lambda p: p not in busy) == 9999
    assert tunnel.choose_local_port(8888, lambda p: p not in busy) == 8890
    with pytest.raises(LabhopError, match="no free local port in 8888-8890"):
        tunnel.choose_local_port(8888, lambda p: False, tries=3)
    with pytest.raises(LabhopError):
        tunnel.choose_local_port(65535, lambda p: False)


def test_port_is_free_sees_a_real_listener() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not tunnel.port_is_free("127.0.0.1", port)
        assert not tunnel.port_is_free("0.0.0.0", port), "all-interfaces conflicts with a loopback listener"
    assert tunnel.port_is_free("127.0.0.1", port)


@pytest.mark.parametrize("value, expected", [(None, "127.0.0.1"), ("", "127.0.0.1"), ("0.0.0.0", "0.0.0.0"),
                                             ("*", "0.0.0.0"), ("[::1]", "::1"), ("192.168.1.5", "192.168.1.5")])
def test_parse_bind(value, expected) -> None:
    assert tunnel.parse_bind(value) == expected


def test_bad_flags_are_usage_errors_before_anything_connects() -> None:
    with pytest.raises(UsageError, match="--bind: 'lan' is not an IP address"):
        tunnel.request_from_flags(jupyter=True, rmate=False, bind="lan")
    with pytest.raises(UsageError, match="--local-port"):
        tunnel.request_from_flags(jupyter=True, rmate=False, local_port="99999")
    with pytest.raises(UsageError, match="--close takes no other flag"):
        tunnel.request_from_flags(jupyter=True, rmate=False, close=True, background=True)
    req = tunnel.request_from_flags(jupyter=True, rmate=True, local_port="9999", editor_port="52699")
    assert (req.local_port, req.editor_port, req.bind) == (9999, 52699, "127.0.0.1")


def test_state_dir_is_private_and_follows_xdg(state_home: Path, tmp_path: Path) -> None:
    assert not state_home.exists()
    assert tunnel.read_records() == [], "reading never creates the directory"
    assert not state_home.exists()
    path = tunnel.state_dir()
    assert path == state_home
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    home_default = tunnel.state_dir({"HOME": str(tmp_path / "h")}, create=False)
    assert home_default == tmp_path / "h" / ".local" / "state" / "labhop"


def test_records_round_trip_private_and_know_a_live_process(state_home: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = tunnel.Record(host="user@internal:22", kind=tunnel.TUNNEL, pid=sleeper.pid, mode="background",
                               transport="openssh", started="now", proc_start=tunnel._proc_start(sleeper.pid),
                               bind="127.0.0.1", local_port=9999, remote_host="127.0.0.1", remote_port=8888)
        path = tunnel.write_record(record)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "/" not in path.name[len("tunnel-"):] and "@" not in path.name
        (loaded,) = tunnel.read_records("user@internal:22")
        assert loaded.local_port == 9999 and tunnel.is_alive(loaded)
        assert tunnel.read_records("other") == []
        assert any("open: 127.0.0.1:9999 -> user@internal:22:8888" in line
                   for line in tunnel.status_lines("user@internal:22"))
        # A reused pid is not our process.
        impostor = tunnel.Record(**{**json.loads(path.read_text()), "proc_start": "1"})
        assert not tunnel.is_alive(impostor)
        said: list[str] = []
        assert tunnel.close_records("user@internal:22", (tunnel.TUNNEL,), said.append) == 1
        assert sleeper.wait(timeout=10) is not None
        assert tunnel.read_records() == [] and said and said[0].startswith("closed ")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_closing_a_dead_forward_only_clears_its_record(state_home: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)
    tunnel.write_record(tunnel.Record(host="h", kind=tunnel.RMATE, pid=dead_pid, mode="background",
                                      transport="openssh", started="t", proc_start="x", rmate_port=52698,
                                      editor_port=52698))
    said: list[str] = []
    assert tunnel.close_records("h", (tunnel.RMATE,), said.append) == 0
    assert "already ended" in said[0]
    said.clear()
    tunnel.close_records("h", (tunnel.RMATE,), said.append)
    assert said == ["no open rmate forward to h: nothing to close"]
