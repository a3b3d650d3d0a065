"""Online installs with uv brought over SSH (tasks/offline/online.py): the plan, and the target-side
installer run for real with a stand-in uv and python that record what they were given."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

from labhop.offline.install import plan_push
from labhop.offline.online import tolerant_unpack
from labhop.remote import source
from labhop.packages import INSTALLED_MARK, PACKAGES
from labhop.plan import plan_provision
from labhop.settings import resolve_settings
from labhop.steps import Command, Upload
from labhop.offline.wheelhouse import Manifest, Wheel
from labhop.target.layout import Layout
from tests.unit.test_wheelhouse import UV, facts

ONLINE = {"url": "https://pypi.org/simple", "source": "default", "reachable": True}
UV_ONLY = Manifest(key="u", directory="/cache/u", requirements=("uv",), wheels=(Wheel(UV, 2000, "d" * 64),),
                   uv_wheel=UV)
OWN_UV = "/home/ada/.labhop/bin/uv"


def online(**changes):
    return facts(index=ONLINE, **changes)


def described(plan) -> list[str]:
    return [f"{type(s).__name__}: {s.description}" for s in plan.steps]


# -- the plan ----------------------------------------------------------------------------------

def test_a_fresh_online_target_gets_uv_over_ssh_then_installs_from_its_index() -> None:
    plan = plan_provision(online(), resolve_settings(None), UV_ONLY)
    got = described(plan)
    assert got[1].startswith("Upload: push 1 of 1 wheels") and got[2].startswith("Command: unpack 1 wheel(s)")
    assert got[3] == f"Command: unpack uv from its wheel to {OWN_UV}"
    assert got[4].startswith("Command: create virtual environment")
    assert got[5] == "Command: install jupyterlab, bcrypt, rmate into /home/ada/.labhop/venv from https://pypi.org/simple"
    unpack, venv, install = plan.steps[3], plan.steps[4], plan.steps[5]
    assert isinstance(unpack, Command) and unpack.note and "it does not run here" in unpack.command
    assert isinstance(venv, Command) and venv.note and f"{OWN_UV} --version" in venv.command
    assert isinstance(install, Command) and install.note and OWN_UV in install.command
    assert "brought over SSH" in install.command
    assert "pip install uv" not in install.command.replace("'", "")  # no uv from the index at pip's speed


def test_uv_unpacked_by_an_earlier_run_is_used_and_nothing_is_pushed() -> None:
    plan = plan_provision(online(uv=OWN_UV), resolve_settings(None), None)
    assert not any(isinstance(s, Upload) or "unpack" in s.description for s in plan.steps)
    assert OWN_UV in plan.steps[-3].command and "brought over SSH" in plan.steps[-3].command


def test_the_targets_own_uv_on_path_does_not_stop_labhop_bringing_its_own() -> None:
    plan = plan_provision(online(uv="/usr/local/bin/uv"), resolve_settings(None), UV_ONLY)
    assert any(s.description.startswith("unpack uv from its wheel") for s in plan.steps)
    assert OWN_UV in plan.steps[-3].command
    # Without a wheel from the controller (none for this platform, or no network there): the target's uv.
    plan = plan_provision(online(uv="/usr/local/bin/uv"), resolve_settings(None), None)
    assert "/usr/local/bin/uv, found on the target" in plan.steps[-3].command


def test_no_uv_anywhere_means_python_venv_and_pip() -> None:
    plan = plan_provision(online(), resolve_settings(None), None)
    venv = plan.steps[1]
    assert isinstance(venv, Command) and not venv.note and "-m venv --clear" in venv.command
    assert "uv" not in venv.command.replace(source("uv_install.py"), "")


def test_nothing_to_install_brings_no_uv() -> None:
    done = {"exists": True, "version": "3.11.2", "complete": True, "installed": INSTALLED_MARK,
            "packages": {"jupyterlab": "4.6.6", "bcrypt": "5.0.0", "rmate": "1.0.3", "pip": "23.0"}}
    plan = plan_provision(online(venv=done), resolve_settings(None), UV_ONLY)
    assert not any(isinstance(s, Upload) or "uv" in s.description for s in plan.steps)


def test_dry_run_before_the_uv_wheel_is_downloaded() -> None:
    pending = Manifest(key="u", directory="/cache/u", requirements=("uv",), pending=True)
    plan = plan_provision(online(), resolve_settings(None), pending)
    assert isinstance(plan.steps[1], Upload)
    assert OWN_UV in plan.steps[-3].command


# -- target side, for real -----------------------------------------------------------------------

def stand_ins(tmp_path: Path, uv_version: str = "0.13.9") -> tuple[Path, Path, Path]:
    """A uv and a venv python that write their argv and environment to a JSON file."""
    record = tmp_path / "record.json"
    dump = (f"import json, os, sys; json.dump({{'argv': sys.argv[1:], 'env': dict(os.environ)}}, "
            f"open({str(record)!r}, 'w'))")
    uv = tmp_path / "uv"
    uv.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then echo "uv {uv_version} (abc 2026-11-01)"; exit 0; fi\n'
                  f'exec {sys.executable} -c "{dump}" "$@"\n')
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nif [ "$3" = --version ]; then exit 0; fi\nexec {sys.executable} -c "{dump}" "$@"\n')
    for path in (uv, python):
        path.chmod(0o755)
    return uv, python, record


def install(tmp_path: Path, uv: str, python: Path, conf: str, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "pip.conf").write_text(conf)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "SSL_"))}
    clean.update({"HOME": str(home), "XDG_CONFIG_DIRS": str(tmp_path / "xdg"),
                  "PIP_CONFIG_FILE": str(tmp_path / "pip.conf"), **env})
    return subprocess.run([sys.executable, "-c", source("uv_install.py"), uv, "brought over SSH", str(python),
                           *PACKAGES.values()], capture_output=True, text=True, timeout=60, env=clean)


CONF = """[global]
index-url = https://ada:s3cret@mirror.example/simple
extra-index-url = https://one.example/simple
    https://two.example/simple
find-links = /opt/wheels /srv/more
cert = /etc/corp/ca.pem
trusted-host = mirror.example
constraint = /etc/corp/constraints.txt
[install]
extra-index-url = https://three.example/simple https://four.example/simple
"""


def test_uv_gets_the_targets_pip_settings_as_its_own_variables(tmp_path: Path) -> None:
    uv, python, record = stand_ins(tmp_path)
    done = install(tmp_path, str(uv), python, CONF)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "with uv 0.13.9 (brought over SSH)"
    got = json.loads(record.read_text())
    assert got["argv"] == ["pip", "install", "--quiet", "--python", str(python), *PACKAGES.values()]
    env = got["env"]
    assert env["UV_INDEX_URL"] == "https://ada:s3cret@mirror.example/simple"
    assert env["UV_EXTRA_INDEX_URL"] == "https://three.example/simple https://four.example/simple"  # [install] wins
    assert env["UV_INDEX_STRATEGY"] == "unsafe-best-match"  # pip takes the best version from every index
    assert env["UV_FIND_LINKS"] == "/opt/wheels,/srv/more"
    assert env["SSL_CERT_FILE"] == "/etc/corp/ca.pem"
    assert env["UV_INSECURE_HOST"] == "mirror.example"
    assert env["UV_CONSTRAINT"] == "/etc/corp/constraints.txt"
    assert env["UV_SYSTEM_CERTS"] == "1" and "UV_NATIVE_TLS" not in env
    # An index password stays in the environment: never in an argv (ps shows those).
    assert not any("s3cret" in a for a in got["argv"])


def test_pip_variables_beat_files_and_an_old_uv_gets_the_old_spelling(tmp_path: Path) -> None:
    uv, python, record = stand_ins(tmp_path, uv_version="0.10.4")
    done = install(tmp_path, str(uv), python, CONF, PIP_INDEX_URL="https://env.example/simple", PIP_NO_INDEX="yes")
    assert done.returncode == 0, done.stderr
    got = json.loads(record.read_text())
    assert got["env"]["UV_INDEX_URL"] == "https://env.example/simple"
    assert got["env"]["UV_NATIVE_TLS"] == "1" and "UV_SYSTEM_CERTS" not in got["env"]
    assert "--no-index" in got["argv"]


def test_pip_config_file_devnull_means_no_configuration(tmp_path: Path) -> None:
    uv, python, record = stand_ins(tmp_path)
    done = install(tmp_path, str(uv), python, CONF, PIP_CONFIG_FILE=os.devnull)
    assert done.returncode == 0, done.stderr
    env = json.loads(record.read_text())["env"]
    assert not {"UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "SSL_CERT_FILE", "UV_FIND_LINKS"} & set(env)
    assert env["UV_SYSTEM_CERTS"] == "1"


def test_a_uv_that_cannot_run_here_leaves_the_install_to_pip(tmp_path: Path) -> None:
    _, python, record = stand_ins(tmp_path)
    broken = tmp_path / "broken-uv"
    broken.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(57))  # an ELF header and nothing the kernel can load
    broken.chmod(0o755)
    done = install(tmp_path, str(broken), python, CONF)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("with pip (uv does not run here: ")
    got = json.loads(record.read_text())
    assert got["argv"][:3] == ["-m", "pip", "install"] and got["argv"][-3:] == list(PACKAGES.values())
    assert "UV_INDEX_URL" not in got["env"]  # pip reads its own configuration
    done = install(tmp_path, str(tmp_path / "gone"), python, CONF)  # the unpack step found it cannot run
    assert done.stdout.strip().splitlines()[-1] == "with pip (uv does not run here)"
    done = install(tmp_path, "", python, CONF)
    assert done.stdout.strip().splitlines()[-1] == "with pip (no uv for this host)"


def test_a_uv_wheel_whose_binary_cannot_run_is_no_failure_online(tmp_path: Path) -> None:
    wheel = tmp_path / UV
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("uv-0.13.9.data/scripts/uv", b"\x7fELF\x02\x01\x01" + bytes(57))
    dest = tmp_path / "prefix" / "bin" / "uv"
    layout = Layout(str(tmp_path / "prefix"))
    facts_here = replace(facts(index=ONLINE), python_executable=sys.executable)
    steps = plan_push(facts_here, layout, replace(UV_ONLY, wheels=()))
    unpack = tolerant_unpack(steps[-1], str(dest))
    assert isinstance(unpack, Command) and shlex.quote(source("unpack_uv.py")) in unpack.command
    unpack = replace(unpack, command=unpack.command.replace(str(layout.prefix) + "/wheelhouse/" + UV, str(wheel)))
    done = subprocess.run(["sh", "-c", unpack.command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("(it does not run here, pip installs instead: ")
    assert "Exec format error" in done.stdout
    assert not dest.exists() and not Path(str(dest) + ".tmp").exists()
