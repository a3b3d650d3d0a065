"""rmate through the reverse tunnel: which port on the target, and a ~/.rmate.rc only labhop may rewrite."""
from __future__ import annotations

import configparser
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from labhop.remote import source
from labhop.tunnel import rmate
from labhop.errors import LabhopError
from labhop.steps import Skip, WriteFile


def ports(rc=None, wanted_free=True, spare=40001) -> rmate.TargetPorts:
    return rmate.TargetPorts(wanted_free=wanted_free, spare=spare, rc=rc, rc_path="/home/ada/.rmate.rc")


def test_remote_port_is_the_default_when_free_else_the_spare_one() -> None:
    assert rmate.choose_remote_port(ports()) == 52698
    assert rmate.choose_remote_port(ports(wanted_free=False)) == 40001
    with pytest.raises(LabhopError):
        rmate.choose_remote_port(ports(wanted_free=False, spare=None))


def kinds(plan) -> list[type]:
    return [type(step) for step in plan.steps]


def test_rc_not_needed_on_the_default_port() -> None:
    plan = rmate.plan_rc(ports(), 52698)
    assert kinds(plan) == [Skip] and "not needed" in plan.steps[0].reason


def test_rc_written_for_another_port_0600_and_readable_by_rmate() -> None:
    (step,) = rmate.plan_rc(ports(), 40001).steps
    assert isinstance(step, WriteFile) and step.mode == 0o600 and step.path == "/home/ada/.rmate.rc"
    assert rmate.is_labhops(step.content) and rmate.rc_port(step.content) == 40001
    # The Python rmate reads it with configparser under a fake section: it must parse there too.
    parser = configparser.ConfigParser()
    parser.read_string("[NOSECTION]\n" + step.content)
    assert parser.get("NOSECTION", "port") == "40001"


def test_labhops_rc_is_rewritten_only_when_the_port_changes() -> None:
    ours = rmate.render_rc(40001)
    assert kinds(rmate.plan_rc(ports(rc=ours), 40001)) == [Skip]
    plan = rmate.plan_rc(ports(rc=ours), 52698)
    assert kinds(plan) == [WriteFile] and "was 40001" in plan.steps[0].description


def test_a_users_own_rc_is_never_overwritten() -> None:
    theirs = "host: localhost\nport: 52699\n"
    plan = rmate.plan_rc(ports(rc=theirs), 40001)
    assert kinds(plan) == [Skip] and "not written by labhop" in plan.steps[0].reason
    assert "rmate -p 40001" in plan.warnings[0]
    same = rmate.plan_rc(ports(rc=theirs), 52699)
    assert kinds(same) == [Skip] and same.warnings == []
    no_port = rmate.plan_rc(ports(rc="host: localhost\n"), 52698)
    assert kinds(no_port) == [Skip] and no_port.warnings == []


def test_ports_source_runs_and_reports_a_taken_port(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    (tmp_path / ".rmate.rc").write_text("port: 1234\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        out = subprocess.run([sys.executable, "-", str(taken)], input=source("rmate_ports.py"), capture_output=True,
                             text=True, env=env, timeout=30, check=True).stdout
    found = rmate.parse_ports(out)
    assert not found.wanted_free and found.spare and found.spare != taken
    assert found.rc == "port: 1234\n" and found.rc_path == str(tmp_path / ".rmate.rc")
    with pytest.raises(LabhopError):
        rmate.parse_ports("garbage")


@pytest.mark.parametrize("endpoint, slurm", [
    (None, None),  # no Slurm job was ever served from here
    ('{"job": "12", "node": "node17", "host": "10.0.0.17", "port": 8888}', ("12", "node17")),
    ("{broken", None),  # half-written: no claim
    ('{"job": "12"}', None),
])
def test_ports_source_names_a_slurm_job_serving_from_here(tmp_path: Path, endpoint: str, slurm: tuple) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    if endpoint is not None:
        (tmp_path / "ep.json").write_text(endpoint)
    out = subprocess.run([sys.executable, "-", "52698", "~/ep.json"], input=source("rmate_ports.py"),
                         capture_output=True, text=True, env=env, timeout=30, check=True).stdout
    found = rmate.parse_ports(out)
    assert found.slurm == slurm
    note = rmate.slurm_note(found, "login")
    if slurm is None:
        assert note is None
    else:
        assert note == ("JupyterLab runs in Slurm job 12 on node17; rmate forwards to the login node login, where "
                        "the files are the same (the shared home): run `rmate FILE` in a shell on login, not in a "
                        "JupyterLab terminal (that runs on node17)")
