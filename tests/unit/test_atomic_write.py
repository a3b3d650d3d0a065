"""shell.atomic_write run by a real sh: all of the new file or the old one, never half."""
from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from labhop.shell import atomic_write


def write(path: Path, payload: bytes, size: int) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", atomic_write(str(path), 0o600, size)], input=payload,
                          capture_output=True, timeout=20)


def test_writes_the_whole_payload_0600_in_a_0700_dir(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "jupyter_server_config.py"
    body = "c.ServerApp.port = 8888\n".encode()
    assert write(path, body, len(body)).returncode == 0
    assert path.read_bytes() == body
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_payload_cut_short_never_replaces_the_old_file(tmp_path: Path) -> None:
    # The writer died mid-payload: its channel closed, and `cat` saw what looks like the end.
    path = tmp_path / "config.py"
    path.write_text("old\n")
    whole = b"c.ServerApp.ip = '127.0.0.1'\nc.ServerApp.port = 8888\n"
    done = write(path, whole[:10], len(whole))
    assert done.returncode != 0
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.py"]  # no temp file left


def test_leftover_temp_files_of_killed_runs_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    (tmp_path / "config.py.labhop-tmp.4242").write_text("half")
    assert write(path, b"new\n", 4).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.py"]
