"""The code that runs on targets (tasks/remote/): it runs on Python 3.9, labhop's floor there.

Which checks run: `uv python install 3.9` cannot download here (the network reaches package
registries only), so every file is checked by ``ast.parse(..., feature_version=(3, 9))`` (syntax)
and by vermin ``-t=3.9-`` (syntax and the standard library's API: a call added in 3.10 fails),
always; and, when this machine has real interpreters (pyenv's 3.9, 3.6, 2.7 here), the scripts
are also compiled and run under them. probe.py and lock.py go further back: a python3 older than
labhop supports must still get far enough to say which version it is.
"""
from __future__ import annotations

import ast
import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Optional

import pytest

from labhop.remote import source
from labhop.target.layout import Layout
from labhop.target.lock import LockEvent, Owner, holder_stdin, lock_command, parse_event
from labhop.target.probe import parse_facts, probe_args, probe_source
from tests.support import need

REMOTE = Path(str(files("labhop.remote")))
# Everything that runs on a target (__init__.py is the controller's reader of these).
SCRIPTS = sorted(p.name for p in REMOTE.iterdir() if p.suffix in (".py", ".sh") and p.name != "__init__.py")
PYTHON_SCRIPTS = [name for name in SCRIPTS if name.endswith(".py")]


@lru_cache(maxsize=None)
def real_python(version: str) -> Optional[str]:
    """An interpreter of ``version`` ("3.9") on this machine, checked by running it, or None."""
    home = os.path.expanduser("~")
    candidates = sorted(glob.glob(f"{home}/.pyenv/versions/{version}.*/bin/python{version}"))
    candidates += [p for p in (shutil.which(f"python{version}"), f"/usr/bin/python{version}") if p]
    for candidate in candidates:
        try:
            done = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                  capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if done.returncode == 0 and done.stdout.strip() == version:
            return candidate
    return None


def test_the_scripts_are_the_ones_documented_and_ascii() -> None:
    """ASCII: the lock holder counts the bytes of what it reads from stdin, whatever the encodings."""
    documented = re.findall(r"^    (\S+\.(?:py|sh)) ", source("__init__.py"), re.M)
    assert sorted(documented) == SCRIPTS
    for name in SCRIPTS:
        source(name).encode("ascii")


@pytest.mark.parametrize("name", PYTHON_SCRIPTS)
def test_parses_as_python_3_9(name: str) -> None:
    ast.parse(source(name), filename=name, feature_version=(3, 9))


@pytest.mark.parametrize("name", ["probe.py", "lock.py", "loader.py"])
def test_what_reports_a_too_old_python_parses_as_old_python(name: str) -> None:
    # 3.4 is as far back as ast's feature_version goes; 2.7 is run for real below where it exists.
    ast.parse(source(name), filename=name, feature_version=(3, 4))


def test_vermin_finds_nothing_newer_than_3_9() -> None:
    need(importlib.util.find_spec("vermin") is not None, "vermin is not installed (pip install -e '.[test]')")
    # vermin has no __main__ module; its console script only calls vermin.main().
    vermin = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())"]
    done = subprocess.run([*vermin, "-t=3.9-", "--no-tips", "--violations", "-q",
                           *(str(REMOTE / name) for name in PYTHON_SCRIPTS)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_sh_script_is_posix_sh() -> None:
    for name in SCRIPTS:
        if name.endswith(".sh"):
            done = subprocess.run(["sh", "-n", str(REMOTE / name)], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr


# -- under real old interpreters, where this machine has them ---------------------------------

@pytest.mark.parametrize("name", PYTHON_SCRIPTS)
def test_compiles_under_a_real_python_3_9(name: str) -> None:
    python = real_python("3.9")
    need(python is not None, "no Python 3.9 on this machine (ast and vermin above still checked it)")
    done = subprocess.run([python, "-c", "import sys; compile(sys.stdin.read(), sys.argv[1], 'exec')", name],
                          input=source(name), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_the_probe_and_the_lock_run_under_a_real_python_3_9(tmp_path: Path) -> None:
    python = real_python("3.9")
    need(python is not None, "no Python 3.9 on this machine")
    prefix = tmp_path / "prefix"
    command = lock_command(python, Layout(str(prefix)), Owner(task="serve", controller="laptop", pid=7),
                           probe_args=probe_args(str(prefix), str(tmp_path / "bin"), 8888, "127.0.0.1"))
    proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "HOME": str(tmp_path)})
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(holder_stdin(probe=True))
        proc.stdin.flush()
        assert parse_event(proc.stdout.readline()) == LockEvent("locked", {"created_prefix": True, "waited": False})
        event = parse_event(proc.stdout.readline())
        assert event is not None and event.kind == "facts", event
        facts = parse_facts(json.dumps(event.value))
        assert facts.python_version[:2] == (3, 9) and facts.python_ok
        assert (facts.prefix, facts.home, facts.port_free) == (str(prefix), str(tmp_path), True)
    finally:
        proc.communicate(timeout=20)  # EOF: the holder lets go and removes the prefix it made
    assert proc.returncode == 0
    assert not prefix.exists()


def test_a_python_3_6_probe_reports_its_version_and_the_plan_refuses_it(tmp_path: Path) -> None:
    python = real_python("3.6")
    need(python is not None, "no Python 3.6 on this machine")
    done = subprocess.run([python, "-", probe_args(str(tmp_path / "p"), str(tmp_path / "bin"))],
                          input=probe_source(), capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    facts = parse_facts(done.stdout)
    assert facts.python_version[:2] == (3, 6) and not facts.python_ok


def test_python_2_7_gets_far_enough_to_say_it_is_too_old(tmp_path: Path) -> None:
    python = real_python("2.7")
    need(python is not None, "no Python 2.7 on this machine")
    done = subprocess.run([python, "-", "{}"], input=probe_source(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert parse_facts(done.stdout).python_version[:2] == (2, 7)

    prefix = tmp_path / "prefix"
    command = lock_command(python, Layout(str(prefix)), Owner(task="serve", controller="laptop", pid=7))
    done = subprocess.run(["sh", "-c", command], input=holder_stdin(probe=False), capture_output=True, text=True,
                          timeout=30)
    event = parse_event(done.stdout)
    assert event is not None and event.kind == "error", done.stdout + done.stderr
    assert re.fullmatch(rf"{re.escape(python)} is Python 2\.7\.\d+; labhop needs Python >= 3\.9 on the target",
                        event.value), event.value
    assert done.returncode == 3
    assert not prefix.exists()


# -- imported as modules, as any code is -------------------------------------------------------

def test_the_probe_expands_home_and_reads_labhops_profile_blocks(tmp_path: Path) -> None:
    from labhop.remote import probe

    (tmp_path / ".profile").write_text("# >>> labhop >>>\nPATH=/b:$PATH\n# <<< labhop <<<\nPATH=/c:$PATH\n")
    target = probe.Target(json.loads(probe_args("~/p", "/c")))
    target.home = str(tmp_path)
    assert target.expand("~") == str(tmp_path) and target.expand("~/x") == f"{tmp_path}/x"
    assert target.expand("/abs") == "/abs"
    assert probe.profiles(target) == {".profile": False}  # /c is on PATH, but not by labhop's block
    target.bin_dir = "/b"
    assert probe.profiles(target) == {".profile": True}


def test_uv_install_hands_pips_settings_to_uv() -> None:
    from labhop.remote import uv_install

    env = uv_install.uv_env({"index-url": ["https://u:p@mirror/simple"], "find-links": ["/w1", "/w2"]}, "0.13.9")
    assert env == {"UV_SYSTEM_CERTS": "1", "UV_PYTHON_DOWNLOADS": "never", "UV_INDEX_URL": "https://u:p@mirror/simple",
                   "UV_FIND_LINKS": "/w1,/w2"}


def test_stop_sh_stops_the_server_and_removes_its_pid_file(tmp_path: Path) -> None:
    server = subprocess.Popen(["sh", "-c", "while :; do sleep 0.1; done"])
    reaper = threading.Thread(target=server.wait)  # as its parent on a target would (else a zombie stays)
    reaper.start()
    pid_file = tmp_path / "server.pid"
    pid_file.write_text(f"{server.pid}\n")
    try:
        started = time.monotonic()
        done = subprocess.run(["sh", str(REMOTE / "stop.sh"), str(server.pid), str(pid_file)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        reaper.join(timeout=5)
        assert server.returncode == -15
        assert time.monotonic() - started < 5
        assert not pid_file.exists()
    finally:
        server.kill()
        server.wait()


def test_the_lock_holder_runs_by_hand_as_a_file(tmp_path: Path) -> None:
    """As its docstring says: `python3 lock.py SPEC_JSON` holds the lock until stdin ends (Ctrl-D)."""
    prefix = tmp_path / "prefix"
    spec = {"prefix": str(prefix), "path": str(prefix / "lock"), "owner": {"task": "debug"}, "min_python": [3, 9]}
    done = subprocess.run([sys.executable, str(REMOTE / "lock.py"), json.dumps(spec)], input="",
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, parse_event(done.stdout)) == (0, LockEvent("locked", {"created_prefix": True,
                                                                                  "waited": False}))
    assert not prefix.exists()  # it made the prefix for its lock only, and took it away again
