"""The target signature: what the probe reports about an interpreter, and the wheel tags that follow.

The probe itself is run for real here (under this interpreter and under Debian's python3
when present): it is plain text fed to a python, and its answer is what the rest parses.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from labhop.errors import LabhopError
from labhop.target.probe import parse_facts, probe_args, probe_source
from labhop.offline.signature import TargetSignature, abi_tag, manylinux_platforms, parse_signature, wheel_machine

LINUX_311 = {"version": [3, 11, 2], "implementation": "CPython", "soabi": "cpython-311-x86_64-linux-gnu",
             "abiflags": "", "system": "linux", "machine": "x86_64", "bits": 64, "libc": "glibc 2.36", "mac": None}


def signature(**changes) -> TargetSignature:
    sig = parse_signature({**LINUX_311, **changes})
    assert sig is not None
    return sig


def run_probe(python: str, tmp_path: Path, env: dict[str, str] | None = None, **args) -> dict:
    argv = probe_args(str(tmp_path / "prefix"), str(tmp_path / "bin"), **args)
    done = subprocess.run([python, "-", argv], input=probe_source(), capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOME": str(tmp_path), **(env or {})})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- parsing -----------------------------------------------------------------------------------

def test_debian_python_signature() -> None:
    sig = signature()
    assert (sig.version, sig.implementation_tag, sig.abi, sig.machine) == ((3, 11, 2), "cp", "cp311", "x86_64")
    assert (sig.libc, sig.libc_version) == ("glibc", (2, 36))
    assert sig.describe() == "CPython 3.11.2 (cp311, manylinux_2_36_x86_64)"


@pytest.mark.parametrize("soabi, abiflags, version, want", [
    ("cpython-311-x86_64-linux-gnu", "", (3, 11, 2), "cp311"),
    ("cpython-313t-x86_64-linux-gnu", "t", (3, 13, 0), "cp313t"),  # free-threaded build
    ("cpython-37m-x86_64-linux-gnu", "m", (3, 7, 16), "cp37m"),
    (None, "m", (3, 6, 15), "cp36m"),  # no SOABI: version + abiflags
])
def test_cpython_abi(soabi, abiflags, version, want) -> None:
    assert abi_tag("CPython", version, soabi, abiflags) == want


def test_pypy_abi_and_implementation_tag() -> None:
    sig = signature(implementation="PyPy", version=[3, 10, 14], soabi="pypy310-pp73-x86_64-linux-gnu")
    assert (sig.implementation_tag, sig.abi) == ("pp", "pypy310_pp73")
    with pytest.raises(LabhopError, match="ABI"):
        abi_tag("PyPy", (3, 10, 14), None)


def test_manylinux_tags_x86_64_go_down_to_2_5_with_legacy_aliases() -> None:
    tags = signature().platforms
    assert tags[0] == "manylinux_2_36_x86_64"
    assert tags[:32] == [f"manylinux_2_{m}_x86_64" for m in range(36, 4, -1)]
    assert tags[32:] == ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def test_manylinux_tags_aarch64_start_at_2_17() -> None:
    tags = manylinux_platforms((2, 28), "aarch64")
    assert tags == [f"manylinux_2_{m}_aarch64" for m in range(28, 16, -1)] + ["manylinux2014_aarch64"]


def test_old_glibc_has_no_manylinux2014() -> None:
    assert manylinux_platforms((2, 12), "x86_64")[-2:] == ["manylinux2010_x86_64", "manylinux1_x86_64"]
    assert "manylinux2014_x86_64" not in manylinux_platforms((2, 12), "x86_64")


def test_platforms_match_packaging_for_this_interpreter() -> None:
    """Our tags for the controller's own interpreter are exactly the ones pip's packaging accepts."""
    tags_module = pytest.importorskip("pip._vendor.packaging.tags")
    if not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.skip("a glibc Linux interpreter is needed for this cross-check")
    sig = parse_signature(run_probe(sys.executable, Path(os.environ.get("TMPDIR", "/tmp")))["signature"])
    assert sig is not None
    theirs = [t.platform for t in tags_module.sys_tags()]
    theirs = list(dict.fromkeys(p for p in theirs if p.startswith("manylinux")))
    assert set(sig.platforms) == set(theirs)
    assert sig.abi == next(t.abi for t in tags_module.sys_tags())


def test_musl_and_macos() -> None:
    assert signature(libc="musl 1.2.4").platforms == ["musllinux_1_2_x86_64", "musllinux_1_1_x86_64"]
    mac = signature(system="darwin", machine="arm64", libc=None, mac="14.2.1")
    assert mac.platforms == ["macosx_14_0_arm64"]
    assert signature(system="darwin", libc=None, mac="10.15.7").platforms == ["macosx_10_15_x86_64"]


def test_unknown_libc_and_other_systems_are_clear_errors() -> None:
    with pytest.raises(LabhopError, match="C library"):
        _ = signature(libc=None).platforms
    with pytest.raises(LabhopError, match="not win32"):
        _ = signature(system="win32", libc=None).platforms


def test_32_bit_interpreters_on_64_bit_kernels() -> None:
    assert wheel_machine("x86_64", 32) == "i686"
    assert wheel_machine("aarch64", 32) == "armv8l"
    assert wheel_machine("AMD64", 64) == "x86_64"
    assert signature(bits=32).platforms[0] == "manylinux_2_36_i686"


def test_key_changes_with_the_patch_version_not_with_requirement_order() -> None:
    reqs = ["jupyterlab>=4,<5", "bcrypt>=4.1", "rmate"]
    key = signature().key(reqs)
    assert key.startswith("cp3.11.2-cp311-manylinux_2_36_x86_64-")
    assert signature(version=[3, 11, 7]).key(reqs) != key
    assert signature(libc="glibc 2.31").key(reqs) != key
    assert signature().key(list(reversed(reqs))) == key
    assert signature().key(reqs[:2]) != key


def test_no_signature_and_garbage() -> None:
    assert parse_signature(None) is None
    with pytest.raises(LabhopError, match="unreadable interpreter signature"):
        parse_signature({"version": ["three"]})


# -- the probe, run for real -------------------------------------------------------------------

def test_probe_reports_this_interpreter(tmp_path: Path) -> None:
    raw = run_probe(sys.executable, tmp_path)
    facts = parse_facts(json.dumps(raw))
    assert facts.signature is not None
    assert facts.signature.version == tuple(sys.version_info[:3])
    assert facts.signature.abi == "cp" + sysconfig.get_config_var("SOABI").split("-")[1]
    assert facts.index is None  # not asked for
    assert facts.wheelhouse == {}


def test_probe_reports_debian_python_patch_version(tmp_path: Path) -> None:
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no /usr/bin/python3 here")
    facts = parse_facts(json.dumps(run_probe("/usr/bin/python3", tmp_path)))
    version = subprocess.run(["/usr/bin/python3", "-c", "import sys; print(*sys.version_info[:3], sep='.')"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert facts.signature is not None and facts.signature.version_text == version


def test_probe_lists_the_pushed_wheelhouse(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "prefix" / "wheelhouse"
    wheelhouse.mkdir(parents=True)
    (wheelhouse / "a-1-py3-none-any.whl").write_bytes(b"x" * 10)
    (wheelhouse / "b-1-py3-none-any.whl.part").write_bytes(b"x" * 3)
    facts = parse_facts(json.dumps(run_probe(sys.executable, tmp_path)))
    assert facts.wheelhouse == {"a-1-py3-none-any.whl": 10, "b-1-py3-none-any.whl.part": 3}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def index_facts(tmp_path: Path, url: str, **env: str):
    raw = run_probe(sys.executable, tmp_path, env={"PIP_INDEX_URL": url, "no_proxy": "*", **env},
                    index=True, packages=("jupyterlab",))
    return parse_facts(json.dumps(raw)).index


def test_index_check_honours_pip_index_url_and_hides_credentials(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        index = index_facts(tmp_path, f"http://user:s3cret@127.0.0.1:{port}/simple")
    assert index is not None and index.reachable and index.source == "PIP_INDEX_URL"
    assert index.url == f"http://127.0.0.1:{port}/simple"
    assert "s3cret" not in json.dumps(run_probe(sys.executable, tmp_path, env={
        "PIP_INDEX_URL": f"http://user:s3cret@127.0.0.1:{port}/simple"}, index=True, packages=("x",)))


def test_index_check_unreachable_is_quick_and_says_why(tmp_path: Path) -> None:
    index = index_facts(tmp_path, f"http://127.0.0.1:{closed_port()}/simple")
    assert index is not None and not index.reachable
    assert "cannot connect to 127.0.0.1" in (index.error or "")
    index = index_facts(tmp_path, "https://no-such-host.invalid/simple")
    assert index is not None and not index.reachable and "cannot resolve no-such-host.invalid" in (index.error or "")


def test_index_check_reads_pip_conf(tmp_path: Path) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nindex-url = file://{tmp_path}\n")
    raw = run_probe(sys.executable, tmp_path, env={"PIP_CONFIG_FILE": str(conf)}, index=True, packages=("x",))
    env_clean = {k: v for k, v in os.environ.items() if k not in ("PIP_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX")}
    if env_clean != dict(os.environ):
        pytest.skip("PIP_INDEX_URL is set in this environment and overrides pip.conf")
    index = parse_facts(json.dumps(raw)).index
    assert index is not None and index.source == str(conf) and index.reachable
    conf.write_text(f"[global]\nindex-url = file://{tmp_path}/missing\n")
    raw = run_probe(sys.executable, tmp_path, env={"PIP_CONFIG_FILE": str(conf)}, index=True, packages=("x",))
    index = parse_facts(json.dumps(raw)).index
    assert index is not None and not index.reachable and index.error == "no such directory"


def test_index_not_checked_when_everything_is_installed(tmp_path: Path) -> None:
    """A no-op re-run must not pay for a network check."""
    venv = tmp_path / "prefix" / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "jupyterlab-4.6.0.dist-info").mkdir()
    (site / "jupyterlab-4.6.0.dist-info" / "RECORD").write_text("")
    (venv / ".labhop-installed").write_text("jupyterlab\n")
    raw = run_probe(sys.executable, tmp_path, index=True, packages=("jupyterlab",))
    assert raw["index"] is None
    raw = run_probe(sys.executable, tmp_path, env={"PIP_INDEX_URL": f"http://127.0.0.1:{closed_port()}/"},
                    index=True, packages=("jupyterlab", "bcrypt"))
    assert raw["index"] is not None and raw["index"]["reachable"] is False


OLD_PYTHONS = sorted(Path("/root/.pyenv/versions").glob("[23].[0-8].*/bin/python"))


@pytest.mark.parametrize("python", OLD_PYTHONS, ids=[p.parts[-3] for p in OLD_PYTHONS])
def test_probe_still_runs_on_old_pythons(tmp_path: Path, python: Path) -> None:
    """A too-old python3 must still report its version (and get a clear error from the plan)."""
    raw = run_probe(str(python), tmp_path, index=True, packages=("x",))
    assert ".".join(map(str, raw["python"]["version"])) == python.parts[-3]
