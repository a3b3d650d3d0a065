"""Wheelhouses: pip's download arguments for a target, the push/verify/install plan, and the
target-side scripts and local upload run for real on small files."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from invoke import Context

from tasks.errors import LabhopError
from tasks.executor import upload
from tasks.offline import UNPACK_UV_SOURCE, VERIFY_SOURCE, offline_reason, plan_push
from tasks.plan import PACKAGES, plan_provision
from tasks.probe import IndexCheck, parse_facts
from tasks.settings import resolve_settings
from tasks.signature import parse_signature
from tasks.steps import Command, Skip, Transfer, Upload
from tasks.wheelcache import ensure_wheelhouse
from tasks.wheelhouse import (Manifest, Wheel, binary_requirements, check_complete, manifest_from_json,
                              pip_download_args, pip_install_args, pip_wheel_args, project_name,
                              source_requirements, uv_install_args, wheel_project)
from tests.unit.test_signature import LINUX_311

SIG = parse_signature(LINUX_311)
REQS = list(PACKAGES.values())
UV = "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
WHEELS = (Wheel("jupyterlab-4.6.6-py3-none-any.whl", 1000, "a" * 64),
          Wheel("bcrypt-5.0.0-cp39-abi3-manylinux_2_34_x86_64.whl", 300, "b" * 64),
          Wheel("rmate-1.0.3-py3-none-any.whl", 10, "c" * 64),
          Wheel(UV, 2000, "d" * 64))
MANIFEST = Manifest(key="k", directory="/cache/k", requirements=tuple(REQS), wheels=WHEELS, uv_wheel=UV)
FACTS = {"python": {"executable": "/usr/bin/python3", "version": [3, 11, 2]}, "uid": 1000, "home": "/home/ada",
         "shell": "/bin/bash", "prefix": "/home/ada/.labhop", "prefix_exists": True,
         "bin_dir": "/home/ada/.local/bin", "venv": {"exists": False, "packages": {}}, "rmate_link": None,
         "login_path": "/usr/bin:/bin", "profiles": {".profile": False}, "signature": LINUX_311,
         "index": {"url": "https://pypi.org/simple", "source": "default", "reachable": False,
                   "error": "cannot resolve pypi.org: [Errno -3] Temporary failure in name resolution"},
         "wheelhouse": {}}
WH = "/home/ada/.labhop/wheelhouse"


def facts(**changes):
    return parse_facts(json.dumps({**FACTS, **changes}))


# -- download arguments ------------------------------------------------------------------------

def test_pip_download_args_resolve_for_the_target_not_the_controller() -> None:
    args = pip_download_args(SIG, binary_requirements(REQS), "/cache/tmp")
    assert args[:2] == ["download", "--only-binary=:all:"]
    assert args[args.index("--python-version") + 1] == "3.11.2"  # the full version: Requires-Python >=3.11.5
    assert args[args.index("--implementation") + 1] == "cp"
    assert args[args.index("--abi") + 1] == "cp311"
    assert args[args.index("--dest") + 1] == "/cache/tmp"
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert platforms == SIG.platforms and "manylinux2014_x86_64" in platforms
    assert args[-2:] == ["jupyterlab>=4,<5", "bcrypt>=4.1"]  # rmate is sdist-only: built, not downloaded
    assert "--no-deps" not in args
    assert "--no-deps" in pip_download_args(SIG, ["uv"], "/d", no_deps=True)
    with pytest.raises(LabhopError):
        pip_download_args(SIG, [], "/d")


def test_sdist_only_packages_get_a_wheel_built() -> None:
    assert source_requirements(REQS) == ["rmate"]
    assert pip_wheel_args("rmate", "/d") == ["wheel", "--no-deps", "--wheel-dir", "/d", "--progress-bar", "off",
                                             "--disable-pip-version-check", "rmate"]


def test_install_args_never_reach_an_index() -> None:
    uv = uv_install_args("/p/bin/uv", WH, "/p/venv/bin/python", ["jupyterlab>=4,<5"])
    pip = pip_install_args("/p/venv/bin/python", WH, ["jupyterlab>=4,<5"])
    for args in (uv, pip):
        assert "--no-index" in args and args[args.index("--find-links") + 1] == WH
    assert "--offline" in uv


def test_names() -> None:
    assert project_name("jupyterlab>=4,<5") == "jupyterlab"
    assert project_name("Jupyter_Server [x]") == "jupyter-server"
    assert wheel_project(UV) == "uv"
    assert wheel_project("jupyter_server-2.21.0-py3-none-any.whl") == "jupyter-server"
    with pytest.raises(LabhopError):
        project_name(">=1")


def test_manifest_round_trip_and_damage(tmp_path: Path) -> None:
    again = manifest_from_json(MANIFEST.to_json(), "/cache/k")
    assert again == MANIFEST and again.size == 3310
    with pytest.raises(LabhopError, match="damaged"):
        manifest_from_json('{"key": "k"}', "/cache/k")
    check_complete(MANIFEST, REQS)
    with pytest.raises(LabhopError, match="no wheel for bcrypt"):
        check_complete(replace(MANIFEST, wheels=WHEELS[:1] + WHEELS[2:]), REQS)


# -- when, and what to push ---------------------------------------------------------------------

def test_offline_when_asked_or_when_the_index_is_unreachable() -> None:
    online = resolve_settings(None)
    assert "pypi.org/simple is unreachable" in offline_reason(facts(), online)
    assert offline_reason(facts(index={"url": "u", "source": "default", "reachable": True}), online) is None
    assert offline_reason(facts(index=None), online) is None
    assert "by request" in offline_reason(facts(index=None), resolve_settings(None, offline=True))


def test_fresh_target_gets_everything_and_uv() -> None:
    steps = plan_push(facts(), layout(), MANIFEST)
    push, verify, unpack = steps
    assert isinstance(push, Upload) and push.directory == WH
    assert [t.dest for t in push.files] == [f"{WH}/{w.name}.part" for w in WHEELS]
    assert [t.source for t in push.files] == [f"/cache/k/{w.name}" for w in WHEELS]
    assert push.size == 3310 and "push 4 of 4 wheels" in push.description
    assert isinstance(verify, Command) and json.loads(verify.stdin) == {w.name: w.sha256 for w in WHEELS}
    assert isinstance(unpack, Command) and "unpack uv" in unpack.description and UV in unpack.command


def test_resume_pushes_only_what_is_missing() -> None:
    present = {WHEELS[0].name: 1000,  # arrived and verified
               WHEELS[1].name + ".part": 120,  # cut half-way
               WHEELS[2].name + ".part": 10}  # complete, not verified yet
    push, verify, _ = plan_push(facts(wheelhouse=present), layout(), MANIFEST)
    assert [(t.dest.rsplit("/", 1)[1], t.offset) for t in push.files] == [
        (WHEELS[1].name + ".part", 120), (UV + ".part", 0)]
    assert push.size == 180 + 2000 and "resuming" in push.description
    assert set(json.loads(verify.stdin)) == {WHEELS[1].name, WHEELS[2].name, UV}


def test_a_part_longer_than_the_wheel_is_resent_whole() -> None:
    push = plan_push(facts(wheelhouse={WHEELS[2].name + ".part": 99}), layout(), MANIFEST)[0]
    assert [t.offset for t in push.files if t.dest.endswith(WHEELS[2].name + ".part")] == [0]


def test_target_with_uv_gets_no_uv_wheel() -> None:
    steps = plan_push(facts(uv="/usr/local/bin/uv"), layout(), MANIFEST)
    assert len(steps) == 2 and all(UV not in t.dest for t in steps[0].files)


def test_all_there_is_a_skip() -> None:
    present = {w.name: w.size for w in WHEELS}
    assert plan_push(facts(wheelhouse=present, uv="/home/ada/.labhop/bin/uv"), layout(), MANIFEST) == [
        Skip(f"push the wheelhouse to {WH}", "all 3 wheels already there")]


def layout():
    from tasks.layout import Layout
    return Layout("/home/ada/.labhop")


# -- whole provision plans ----------------------------------------------------------------------

def kinds(plan) -> list[str]:
    return [type(s).__name__ + ": " + s.description for s in plan.steps]


def test_offline_provision_plan() -> None:
    plan = plan_provision(facts(), resolve_settings(None), MANIFEST)
    got = kinds(plan)
    assert got[0].startswith("Skip: directory")
    assert got[1].startswith("Upload: push 4 of 4 wheels")
    assert got[2].startswith("Command: verify 4 wheel(s)")
    assert got[3].startswith("Command: unpack uv")
    assert got[4].startswith("Command: create virtual environment") and got[4].endswith("(uv)")
    assert "from the wheelhouse with uv, no index" in got[5]
    venv, install = plan.steps[4].command, plan.steps[5].command
    assert "/home/ada/.labhop/bin/uv venv" in venv.replace("'", "")
    assert "--no-index" in install and "--offline" in install and WH in install


def test_offline_without_a_uv_wheel_uses_python_venv_and_pip() -> None:
    manifest = replace(MANIFEST, wheels=WHEELS[:3], uv_wheel=None)
    plan = plan_provision(facts(), resolve_settings(None), manifest)
    assert not any("unpack uv" in s.description for s in plan.steps)
    install = next(s for s in plan.steps if "from the wheelhouse" in s.description)
    assert "with pip" in install.description and "-m pip install --no-index" in install.command
    venv = next(s for s in plan.steps if "virtual environment" in s.description)
    assert "-m venv" in venv.command


def test_offline_needs_a_wheelhouse() -> None:
    with pytest.raises(LabhopError, match="no wheelhouse"):
        plan_provision(facts(), resolve_settings(None), None)


def test_online_target_pushes_nothing() -> None:
    plan = plan_provision(facts(index={"url": "u", "source": "default", "reachable": True}), resolve_settings(None))
    assert not any(isinstance(s, Upload) or "wheel" in s.description for s in plan.steps)


def test_dry_run_without_a_built_wheelhouse() -> None:
    pending = Manifest(key="k", directory="/cache/k", requirements=tuple(REQS), pending=True)
    plan = plan_provision(facts(), resolve_settings(None), pending)
    assert "(built first)" in plan.steps[1].description
    assert "with uv" in plan.steps[-3].description


# -- target-side scripts, run for real ----------------------------------------------------------

def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_verify_moves_good_wheels_and_removes_damaged_ones(tmp_path: Path) -> None:
    (tmp_path / "good.whl.part").write_bytes(b"good")
    (tmp_path / "bad.whl.part").write_bytes(b"flipped")
    wanted = {"good.whl": sha(b"good"), "bad.whl": sha(b"original"), "gone.whl": sha(b"x")}
    done = subprocess.run([sys.executable, "-c", VERIFY_SOURCE, str(tmp_path)], input=json.dumps(wanted),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "2 wheel(s) arrived damaged" in done.stderr and "bad.whl" in done.stderr and "gone.whl" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.whl"]


def test_unpack_uv_extracts_a_runnable_binary(tmp_path: Path) -> None:
    wheel = tmp_path / UV
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("uv-0.13.9.data/scripts/uv", "#!/bin/sh\necho uv 0.13.9\n")
        z.writestr("uv-0.13.9.data/scripts/uvx", "#!/bin/sh\n")
    dest = tmp_path / "prefix" / "bin" / "uv"
    subprocess.run([sys.executable, "-c", UNPACK_UV_SOURCE, str(wheel), str(dest)], check=True, timeout=30)
    assert subprocess.run([str(dest)], capture_output=True, text=True).stdout == "uv 0.13.9\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert stat.S_IMODE(dest.parent.stat().st_mode) == 0o700


def test_local_upload_resumes_a_cut_file(tmp_path: Path) -> None:
    source = tmp_path / "src.whl"
    data = os.urandom(3 * (1 << 20) + 123)
    source.write_bytes(data)
    dest_dir = tmp_path / "target" / "wheelhouse"
    dest_dir.mkdir(parents=True)
    (dest_dir / "src.whl.part").write_bytes(data[:1000])  # what a cut connection left
    lines: list[str] = []
    step = Upload("push", str(dest_dir), (Transfer(str(source), str(dest_dir / "src.whl.part"), len(data), 1000),))
    upload(Context(), step, lines.append)
    assert (dest_dir / "src.whl.part").read_bytes() == data
    assert lines and lines[-1].startswith("  pushing  1/1 files, 3.1 of 3.1 MB")
    missing = Upload("push", str(dest_dir), (Transfer(str(tmp_path / "nope.whl"), str(dest_dir / "x"), 1),))
    with pytest.raises(LabhopError, match="nope.whl is missing on this machine"):
        upload(Context(), missing)


# -- the controller cache -----------------------------------------------------------------------

def test_cached_wheelhouse_is_reused_and_a_damaged_one_is_not(tmp_path: Path) -> None:
    key = SIG.key(REQS)
    directory = tmp_path / key
    directory.mkdir()
    wheels = []
    for name in ("jupyterlab-4.6.6-py3-none-any.whl", "bcrypt-5.0.0-cp39-abi3-manylinux_2_34_x86_64.whl",
                 "rmate-1.0.3-py3-none-any.whl"):
        (directory / name).write_bytes(name.encode())
        wheels.append(Wheel(name, len(name), sha(name.encode())))
    manifest = Manifest(key=key, directory=str(directory), requirements=tuple(REQS), wheels=tuple(wheels))
    (directory / "manifest.json").write_text(manifest.to_json())
    said: list[str] = []
    got = ensure_wheelhouse(SIG, REQS, said.append, build=False, root=tmp_path)
    assert got == manifest and not got.pending and "cached in" in said[-1]
    (directory / wheels[0].name).write_bytes(b"short")  # not the size the manifest says: rebuild
    got = ensure_wheelhouse(SIG, REQS, said.append, build=False, root=tmp_path)
    assert got.pending and "not cached yet" in said[-1]


def test_a_facts_index_check_object() -> None:
    assert facts().index == IndexCheck(url="https://pypi.org/simple", source="default", reachable=False,
                                       error="cannot resolve pypi.org: [Errno -3] Temporary failure in name resolution")
