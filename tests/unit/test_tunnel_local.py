"""Laptop side of tunnels: port choice, --bind, flags, the state dir and its records, process identity."""
from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from labhop.errors import LabhopError, UsageError
from labhop.tunnel import forward, local, opener, process, records


@pytest.fixture()
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "labhop"


def test_choose_local_port_takes_the_wanted_one_or_the_next_free() -> None:
    busy = {8888, 8889}
    assert opener.choose_local_port(9999, lambda p: p not in busy) == 9999
    assert opener.choose_local_port(8888, lambda p: p not in busy) == 8890
    with pytest.raises(LabhopError, match="no free local port in 8888-8890"):
        opener.choose_local_port(8888, lambda p: False, tries=3)
    with pytest.raises(LabhopError):
        opener.choose_local_port(65535, lambda p: False)


def test_port_is_free_sees_a_real_listener() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not local.port_is_free("127.0.0.1", port)
        assert not local.port_is_free("0.0.0.0", port), "all-interfaces conflicts with a loopback listener"
    assert local.port_is_free("127.0.0.1", port)


@pytest.mark.parametrize("value, expected", [(None, "127.0.0.1"), ("", "127.0.0.1"), ("0.0.0.0", "0.0.0.0"),
                                             ("*", "0.0.0.0"), ("[::1]", "::1"), ("192.168.1.5", "192.168.1.5")])
def test_parse_bind(value, expected) -> None:
    assert forward.parse_bind(value) == expected


def test_bad_flags_are_usage_errors_before_anything_connects() -> None:
    with pytest.raises(UsageError, match="--bind: 'lan' is not an IP address"):
        forward.request_from_flags(jupyter=True, rmate=False, bind="lan")
    with pytest.raises(UsageError, match="--local-port"):
        forward.request_from_flags(jupyter=True, rmate=False, local_port="99999")
    with pytest.raises(UsageError, match="--close takes no other flag"):
        forward.request_from_flags(jupyter=True, rmate=False, close=True, background=True)
    req = forward.request_from_flags(jupyter=True, rmate=True, local_port="9999", editor_port="52699")
    assert (req.local_port, req.editor_port, req.bind) == (9999, 52699, "127.0.0.1")


def test_state_dir_is_private_and_follows_xdg(state_home: Path, tmp_path: Path) -> None:
    assert not state_home.exists()
    assert records.read_records() == [], "reading never creates the directory"
    assert not state_home.exists()
    path = records.state_dir()
    assert path == state_home
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    home_default = records.state_dir({"HOME": str(tmp_path / "h")}, create=False)
    assert home_default == tmp_path / "h" / ".local" / "state" / "labhop"


def test_records_round_trip_private_and_know_a_live_process(state_home: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = records.Record(host="user@internal:22", kind=records.TUNNEL, pid=sleeper.pid, mode="background",
                               transport="openssh", started="now", proc_start=process.start_time(sleeper.pid),
                               bind="127.0.0.1", local_port=9999, remote_host="127.0.0.1", remote_port=8888)
        path = records.write_record(record)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "/" not in path.name[len("tunnel-"):] and "@" not in path.name
        (loaded,) = records.read_records("user@internal:22")
        assert loaded.local_port == 9999 and records.is_alive(loaded)
        assert records.read_records("other") == []
        assert any("open: 127.0.0.1:9999 -> user@internal:22:8888" in line
                   for line in records.status_lines("user@internal:22"))
        # A reused pid is not our process.
        impostor = records.Record(**{**json.loads(path.read_text()), "proc_start": "1"})
        assert not records.is_alive(impostor)
        said: list[str] = []
        assert records.close_records("user@internal:22", (records.TUNNEL,), said.append) == 1
        assert sleeper.wait(timeout=10) is not None
        assert records.read_records() == [] and said and said[0].startswith("closed ")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_closing_a_dead_forward_only_clears_its_record(state_home: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)
    records.write_record(records.Record(host="h", kind=records.RMATE, pid=dead_pid, mode="background",
                                      transport="openssh", started="t", proc_start="x", rmate_port=52698,
                                      editor_port=52698))
    said: list[str] = []
    assert records.close_records("h", (records.RMATE,), said.append) == 0
    assert "already ended" in said[0]
    said.clear()
    records.close_records("h", (records.RMATE,), said.append)
    assert said == ["no open rmate forward to h: nothing to close"]


def test_start_time_tells_a_reused_pid_apart_with_proc_and_with_ps(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for proc_dir in (process.PROC, Path("/nonexistent-proc")):  # Linux, then as on macOS (`ps`)
            monkeypatch.setattr(process, "PROC", proc_dir)
            started = process.start_time(sleeper.pid)
            assert started, f"no start time for a running process (PROC={proc_dir})"
            assert process.start_time(sleeper.pid) == started
            assert process.is_running(sleeper.pid, started)
            assert not process.is_running(sleeper.pid, "another process's start"), "a reused pid is not ours"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert process.start_time(sleeper.pid) is None
    assert not process.is_running(sleeper.pid, None)


def test_write_private_json_is_atomic_and_private(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    local.write_private_json(str(path), {"b": 1, "a": [2]})
    local.write_private_json(str(path), {"b": 3})
    assert json.loads(path.read_text()) == {"b": 3}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"], "no temp file left behind"
