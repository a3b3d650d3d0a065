"""The probe, both halves: raw probe output in, exact HostFacts out (probe_cases/*.json, in the pyinfra
style); and the real tasks/remote/probe.py run by this machine's python3 against a prefix laid out here.

A case is {"about", "probe": what the probe printed, "facts": HostFacts as a JSON object}. A new fact
needs a key in fresh_host.json's "probe" (test_the_cases_know_every_key_the_probe_prints says so).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from labhop.certs import generate, wanted_names
from labhop.packages import INSTALLED_MARK, PACKAGES
from labhop.remote import source
from labhop.target.layout import PROFILE_BEGIN, PROFILE_END, Layout
from labhop.target.probe import HostFacts, facts_from, parse_facts, probe_args

CASES = sorted((Path(__file__).parent / "probe_cases").glob("*.json"))
PROBE = Path(str(files("labhop.remote"))) / "probe.py"


def as_json(facts: HostFacts) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(facts)))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_probe_case(path: Path) -> None:
    case = json.loads(path.read_text())
    assert as_json(facts_from(case["probe"])) == case["facts"], case["about"]


def test_cases_exist() -> None:
    assert len(CASES) >= 4


def test_login_banners_before_the_facts_are_ignored() -> None:
    case = json.loads((Path(__file__).parent / "probe_cases" / "fresh_host.json").read_text())
    stdout = "Welcome to nb1\n{not the facts\n" + json.dumps(case["probe"]) + "\n"
    assert as_json(parse_facts(stdout)) == case["facts"]


def run_probe(args: str, home: Path, env: dict[str, str] | None = None) -> dict:
    """tasks/remote/probe.py as a file, the way one would run it by hand on a target."""
    done = subprocess.run([sys.executable, str(PROBE), args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOME": str(home), "SHELL": "/bin/sh", **(env or {})})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_cases_know_every_key_the_probe_prints(tmp_path: Path) -> None:
    raw = run_probe(probe_args(str(tmp_path / "prefix"), str(tmp_path / "bin")), tmp_path)
    fresh = json.loads((Path(__file__).parent / "probe_cases" / "fresh_host.json").read_text())
    assert sorted(raw) == sorted(fresh["probe"])
    assert sorted(raw["venv"]) == sorted(fresh["probe"]["venv"])
    assert sorted(raw["tls"]) == sorted(fresh["probe"]["tls"])


def test_the_real_probe_reads_a_prefix_laid_out_by_labhop(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    layout = Layout(str(tmp_path / "prefix"))
    prefix = Path(layout.prefix)
    bin_dir = tmp_path / "bin"
    version = ".".join(map(str, sys.version_info[:3]))
    # A finished venv: pyvenv.cfg, an interpreter, marks, distributions (one killed before its RECORD).
    site = prefix / "venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    site.mkdir(parents=True)
    (prefix / "venv" / "bin").mkdir()
    Path(layout.venv_python).symlink_to(sys.executable)
    Path(layout.path("venv_cfg")).write_text(f"home = /usr/bin\nversion = {version}\n")
    Path(layout.venv_mark).write_text("")
    Path(layout.install_mark).write_text(INSTALLED_MARK)
    for dist in ("jupyterlab-4.2.5", "bcrypt-4.2.0", "half_done-1.0"):
        (site / f"{dist}.dist-info").mkdir()
        if not dist.startswith("half"):
            (site / f"{dist}.dist-info" / "RECORD").write_text("")
    (site / "rmate-1.0.3-py3.11.egg-info").mkdir()
    Path(layout.path("venv_rmate")).write_text("#!/bin/sh\n")
    bin_dir.mkdir()
    (bin_dir / "rmate").symlink_to(layout.path("venv_rmate"))
    Path(layout.lock_file).write_text("{}")
    # labhop's own uv, a wheelhouse, the server's files, a TLS pair.
    Path(layout.own_uv).parent.mkdir()
    Path(layout.own_uv).write_text("#!/bin/sh\n")
    Path(layout.own_uv).chmod(0o755)
    Path(layout.wheelhouse).mkdir()
    (Path(layout.wheelhouse) / "bcrypt-4.2.0-cp39-abi3-manylinux_2_28_x86_64.whl").write_bytes(b"x" * 123)
    Path(layout.config_file).parent.mkdir()
    Path(layout.config_file).write_text("c.ServerApp.port = 8888\n")
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "jupyter"])
    cert, key = generate(wanted_names(["nb1"]))
    Path(layout.tls_cert).parent.mkdir()
    Path(layout.tls_cert).write_text(cert)
    Path(layout.tls_key).write_text(key)
    (home / ".profile").write_text(f"# mine\n{PROFILE_BEGIN}\nPATH={bin_dir}:$PATH\n{PROFILE_END}\n")
    (home / ".zprofile").write_text(f"{PROFILE_BEGIN}\nPATH=/elsewhere:$PATH\n{PROFILE_END}\n")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        Path(layout.pid_file).write_text(f"{server.pid}\n")
        raw = run_probe(probe_args(layout.prefix, str(bin_dir), taken.getsockname()[1], "127.0.0.1", index=True,
                                   packages=tuple(PACKAGES)), home,
                        env={"SSH_CONNECTION": "10.0.0.9 50000 10.0.0.5 22", "PIP_INDEX_URL": "file:///nowhere"})
    finally:
        taken.close()
        server.kill()
        server.wait()
    facts = facts_from(raw)
    assert (facts.prefix, facts.prefix_exists, facts.home, facts.bin_dir) == (layout.prefix, True, str(home),
                                                                              str(bin_dir))
    assert (facts.venv_exists, facts.venv_version, facts.venv_complete, facts.venv_installed) == (
        True, version, True, INSTALLED_MARK)
    assert facts.venv_packages == {"jupyterlab": "4.2.5", "bcrypt": "4.2.0", "rmate": "1.0.3"}
    assert facts.uv == layout.own_uv
    assert facts.wheelhouse == {"bcrypt-4.2.0-cp39-abi3-manylinux_2_28_x86_64.whl": 123}
    assert facts.index is None  # everything asked for is installed: no index check
    assert (facts.rmate_link, facts.rmate_link_labhop) == (layout.path("venv_rmate"), True)
    assert facts.profiles == {".profile": True, ".zprofile": False}
    assert facts.config == "c.ServerApp.port = 8888\n"
    assert (facts.server.pid, facts.server.alive) == (server.pid, True)
    assert facts.tls.cert == cert and facts.tls.pair_ok is True
    assert facts.tls.key_sha256 == hashlib.sha256(key.encode()).hexdigest()
    assert facts.ssh_address == "10.0.0.5"
    assert facts.port_free is False
    assert facts.room is not None and facts.room.dir == layout.prefix


def test_the_real_probe_checks_the_index_when_something_is_missing(tmp_path: Path) -> None:
    args = probe_args(str(tmp_path / "prefix"), str(tmp_path / "bin"), index=True, packages=tuple(PACKAGES))
    facts = facts_from(run_probe(args, tmp_path, env={"PIP_INDEX_URL": f"file://{tmp_path}/nowhere"}))
    assert facts.index is not None
    assert (facts.index.url, facts.index.source, facts.index.reachable, facts.index.error) == (
        f"file://{tmp_path}/nowhere", "PIP_INDEX_URL", False, "no such directory")
    assert not facts.venv_exists


def test_the_probe_file_is_what_ships() -> None:
    assert PROBE.read_text() == source("probe.py")
