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

from labhop.errors import LabhopError
from labhop.executor import upload
from labhop.offline.install import bundle_name, offline_reason, plan_push
from labhop.remote import source
from labhop.packages import PACKAGES
from labhop.plan import plan_provision
from labhop.target.probe import IndexCheck, parse_facts
from labhop.settings import resolve_settings
from labhop.offline.signature import parse_signature
from labhop.steps import Command, Skip, Transfer, Upload
from labhop.offline.wheelcache import ensure_wheelhouse
from labhop.offline.wheelhouse import (Manifest, Wheel, binary_requirements, check_complete, manifest_from_json,
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


def test_fresh_target_gets_everything_and_uv_in_one_bundle() -> None:
    steps = plan_push(facts(), layout(), MANIFEST)
    push, unpack, uv = steps
    assert isinstance(push, Upload) and push.directory == WH and len(push.files) == 1
    bundle = push.files[0]
    assert bundle.sources == tuple(f"/cache/k/{w.name}" for w in WHEELS)
    assert bundle.dest == f"{WH}/{bundle_name(list(WHEELS))}" and bundle.offset == 0
    assert push.size == 3310 and "push 4 of 4 wheels (0.0 MB)" in push.description
    assert isinstance(unpack, Command) and json.loads(unpack.stdin) == [[w.name, w.size, w.sha256] for w in WHEELS]
    assert bundle_name(list(WHEELS)) in unpack.command
    assert isinstance(uv, Command) and "unpack uv" in uv.description and UV in uv.command


def test_only_missing_wheels_travel_and_a_cut_bundle_resumes() -> None:
    missing = [WHEELS[1], WHEELS[2], WHEELS[3]]
    present = {WHEELS[0].name: 1000, bundle_name(missing): 120, ".bundle-of-an-older-plan": 50}
    push, unpack, _ = plan_push(facts(wheelhouse=present), layout(), MANIFEST)
    assert [p.rsplit("/", 1)[1] for p in push.files[0].sources] == [w.name for w in missing]
    assert (push.files[0].offset, push.files[0].size, push.size) == (120, 2310, 2190)
    assert "push 3 of 4 wheels" in push.description and "resuming after 0.0 MB" in push.description
    assert [n for n, _, _ in json.loads(unpack.stdin)] == [w.name for w in missing]


def test_a_complete_bundle_is_only_unpacked_and_a_longer_one_resent() -> None:
    missing = list(WHEELS[1:])
    steps = plan_push(facts(wheelhouse={WHEELS[0].name: 1000, bundle_name(missing): 2310}), layout(), MANIFEST)
    assert [type(s) for s in steps] == [Command, Command]
    push = plan_push(facts(wheelhouse={WHEELS[0].name: 1000, bundle_name(missing): 9999}), layout(), MANIFEST)[0]
    assert push.files[0].offset == 0


def test_target_with_uv_gets_no_uv_wheel() -> None:
    steps = plan_push(facts(uv="/usr/local/bin/uv"), layout(), MANIFEST)
    assert len(steps) == 2 and all(UV not in source for source in steps[0].files[0].sources)


def test_all_there_is_a_skip() -> None:
    present = {w.name: w.size for w in WHEELS}
    assert plan_push(facts(wheelhouse=present, uv="/home/ada/.labhop/bin/uv"), layout(), MANIFEST) == [
        Skip(f"push the wheelhouse to {WH}", "all 3 wheels already there")]


def layout():
    from labhop.target.layout import Layout
    return Layout("/home/ada/.labhop")


# -- whole provision plans ----------------------------------------------------------------------

def kinds(plan) -> list[str]:
    return [type(s).__name__ + ": " + s.description for s in plan.steps]


def test_offline_provision_plan() -> None:
    plan = plan_provision(facts(), resolve_settings(None), MANIFEST)
    got = kinds(plan)
    assert got[0].startswith("Skip: directory")
    assert got[1].startswith("Upload: push 4 of 4 wheels")
    assert got[2].startswith("Command: unpack 4 wheel(s) and check their sha256")
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


def test_unbundle_keeps_good_wheels_and_drops_damaged_ones(tmp_path: Path) -> None:
    wheels = [("a.whl", b"first wheel"), ("b.whl", b"second"), ("c.whl", b"third one")]
    bundle = bytearray(b"".join(data for _, data in wheels))
    bundle[len(wheels[0][1]) + 2] ^= 0xFF  # a flipped byte inside b.whl
    (tmp_path / ".bundle-x").write_bytes(bytes(bundle))
    (tmp_path / ".bundle-stale").write_bytes(b"left by an older plan")
    listed = [[name, len(data), sha(data)] for name, data in wheels] + [["d.whl", 5, sha(b"never")]]
    done = subprocess.run([sys.executable, "-c", source("unbundle.py"), str(tmp_path), ".bundle-x"],
                          input=json.dumps(listed), capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "2 wheel(s) arrived damaged and were removed (run again to resend them): b.whl, d.whl" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.whl", "c.whl"]
    assert (tmp_path / "c.whl").read_bytes() == b"third one"


def test_unpack_uv_extracts_a_runnable_binary(tmp_path: Path) -> None:
    wheel = tmp_path / UV
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("uv-0.13.9.data/scripts/uv", "#!/bin/sh\necho uv 0.13.9\n")
        z.writestr("uv-0.13.9.data/scripts/uvx", "#!/bin/sh\n")
    dest = tmp_path / "prefix" / "bin" / "uv"
    subprocess.run([sys.executable, "-c", source("unpack_uv.py"), str(wheel), str(dest)], check=True, timeout=30)
    assert subprocess.run([str(dest)], capture_output=True, text=True).stdout == "uv 0.13.9\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700  # the user's alone, like all below the prefix
    assert stat.S_IMODE(dest.parent.stat().st_mode) == 0o700


def test_local_upload_streams_files_one_after_another_and_resumes(tmp_path: Path) -> None:
    parts = [os.urandom(n) for n in (3 * (1 << 20) + 123, 10, 5000)]
    sources = []
    for i, data in enumerate(parts):
        sources.append(tmp_path / f"w{i}.whl")
        sources[-1].write_bytes(data)
    whole = b"".join(parts)
    dest_dir = tmp_path / "target" / "wheelhouse"
    dest_dir.mkdir(parents=True)
    offset = len(parts[0]) + 4  # a cut inside the second file
    (dest_dir / ".bundle").write_bytes(whole[:offset])
    lines: list[str] = []
    step = Upload("push", str(dest_dir), (Transfer(tuple(map(str, sources)), str(dest_dir / ".bundle"), len(whole),
                                                   offset),))
    upload(Context(), step, lines.append)
    assert (dest_dir / ".bundle").read_bytes() == whole
    assert lines and lines[-1].startswith("  pushing  0.0 of 0.0 MB")  # only the 5006 bytes after the cut
    fresh = Upload("push", str(dest_dir), (Transfer(tuple(map(str, sources)), str(dest_dir / "again"), len(whole)),))
    upload(Context(), fresh, lines.append)
    assert (dest_dir / "again").read_bytes() == whole and lines[-1].startswith("  pushing  3.2 of 3.2 MB")
    missing = Upload("push", str(dest_dir), (Transfer((str(tmp_path / "nope.whl"),), str(dest_dir / "x"), 1),))
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


def test_an_installer_killed_by_a_signal_gets_one_more_go(tmp_path: Path) -> None:
    from labhop.offline.install import install_step
    fake = tmp_path / "uv"
    fake.write_text('#!/bin/sh\nif [ ! -e "$0.ran" ]; then touch "$0.ran"; kill -SEGV $$; fi\necho installed "$@"\n')
    fake.chmod(0o755)
    step = install_step(facts(uv=str(fake)), layout(), MANIFEST, ["rmate"], ["rmate"])
    done = subprocess.run(["sh", "-c", step.command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.startswith("installed pip install --offline --no-index")
    assert "uv died (exit 139); trying once more" in done.stderr
    fake.write_text("#!/bin/sh\necho 'no matching distribution' >&2; exit 2\n")
    done = subprocess.run(["sh", "-c", step.command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "trying once more" not in done.stderr
