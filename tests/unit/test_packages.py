"""Extra packages for labhop's venv: requirement checks, what provision installs, what a removal leaves."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Optional

import pytest

from labhop.errors import UsageError
from labhop.inventory import parse_inventory
from labhop.packages import INSTALLED_MARK, installed_mark, missing_packages, project_of, requirement_error
from labhop.plan import plan_provision
from labhop.settings import HostSettings, resolve_settings
from labhop.steps import Command, Skip, WriteFile
from labhop.target.probe import HostFacts, facts_from

BASE = {"jupyterlab": "4.2.0", "bcrypt": "4.2.0", "rmate": "1.0.3"}


def facts(packages: Optional[dict[str, str]] = None, installed: Optional[str] = INSTALLED_MARK) -> HostFacts:
    raw: dict[str, Any] = {
        "python": {"executable": "/usr/bin/python3", "version": [3, 11, 2]}, "uid": 1000, "home": "/home/ada",
        "prefix": "/home/ada/.labhop", "prefix_exists": True, "bin_dir": "/home/ada/.local/bin",
        "venv": {"exists": True, "version": "3.11.2", "packages": {**BASE, **(packages or {})}, "complete": True,
                 "installed": installed},
        "rmate_link": "/home/ada/.labhop/venv/bin/rmate", "login_path": "/home/ada/.local/bin:/usr/bin"}
    return facts_from(json.loads(json.dumps(raw)))


def with_packages(*requirements: str) -> HostSettings:
    return resolve_settings(None, packages=list(requirements))


def test_requirements_are_pips() -> None:
    assert requirement_error("pandas==2.2.*") is None
    assert requirement_error("torch @ https://example.org/torch.whl") is None
    assert "not a valid requirement" in (requirement_error("numpy>=>1") or "")
    assert "pip option" in (requirement_error("--index-url=http://x") or "")
    assert project_of("Zope.Interface>=5") == "zope-interface"
    with pytest.raises(UsageError, match=r"^--with 'numpy>=>1': 'numpy>=>1' is not a valid requirement"):
        resolve_settings(None, packages=["numpy>=>1"])
    with pytest.raises(UsageError, match=r"inventory.toml:3: 'packages' in \[hosts.gpu\]: 'numpy>=>1'"):
        parse_inventory('[hosts.gpu]\nhostname = "x"\npackages = ["numpy>=>1"]\n', Path("inventory.toml"))
    inv = parse_inventory('[defaults]\npackages = ["numpy"]\n[hosts.gpu]\nkernels = ["~/envs/a"]\n',
                          Path("inventory.toml"))
    gpu = resolve_settings(inv.get("gpu"), packages=["pandas==2.2.*", "numpy"], kernels=["/opt/py"])
    assert gpu.packages == ("numpy", "pandas==2.2.*") and gpu.kernels == ("~/envs/a", "/opt/py")


def test_only_the_missing_extra_is_installed_and_recorded_with_the_rest() -> None:
    settings = with_packages("pandas==2.2.*")
    plan = plan_provision(facts(), settings)
    install = [s for s in plan.steps if isinstance(s, Command) and s.description.startswith("install ")]
    assert [s.description for s in install] == ["install pandas into /home/ada/.labhop/venv"]
    installing, recording = install[0].command.split("printf %s ")
    assert "'pandas==2.2.*'" in installing and "jupyterlab" not in installing
    # The mark it leaves lists everything now installed: labhop's requirements and the extra.
    assert recording == f"{shlex.quote(installed_mark(settings))} > /home/ada/.labhop/venv/.labhop-installed"

    done = facts({"pandas": "2.2.3"}, installed=installed_mark(settings))
    again = plan_provision(done, settings)
    assert all(isinstance(s, Skip) for s in again.steps)
    assert "install JupyterLab, bcrypt, rmate, pandas: installed (jupyterlab 4.2.0, bcrypt 4.2.0, rmate 1.0.3, " \
           "pandas 2.2.3)" in [f"{s.description}: {s.reason}" for s in again.steps if isinstance(s, Skip)]
    # A changed requirement is installed again, as it now reads.
    assert missing_packages(done, with_packages("pandas==2.1.*")) == ["pandas"]


def test_a_package_removed_from_the_list_is_left_installed_and_said_once() -> None:
    before = with_packages("pandas==2.2.*", "tabulate")
    now = with_packages("tabulate")
    state = facts({"pandas": "2.2.3", "tabulate": "0.9.0"}, installed=installed_mark(before))
    plan = plan_provision(state, now)
    writes = [s for s in plan.steps if isinstance(s, WriteFile)]
    assert [w.description for w in writes] == [
        "record the venv's packages: pandas==2.2.* no longer listed, left installed "
        "(`/home/ada/.labhop/venv/bin/python -m pip uninstall` removes them)"]
    assert writes[0].content == installed_mark(now)
    after = plan_provision(facts({"pandas": "2.2.3", "tabulate": "0.9.0"}, installed=installed_mark(now)), now)
    assert all(isinstance(s, Skip) for s in after.steps)


def test_an_interrupted_install_installs_everything_again() -> None:
    settings = with_packages("tabulate")
    assert missing_packages(facts({"tabulate": "0.9.0"}, installed=None), settings) == [
        "jupyterlab", "bcrypt", "rmate", "tabulate"]
