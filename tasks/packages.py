"""What provision installs into the target's venv, and what of it is missing there.

Pure. The plan (tasks/plan.py), the wheelhouse for air-gapped targets (tasks/offline/wheelcache.py)
and the probe's arguments (tasks/executor.py) all read the one list here.
"""
from __future__ import annotations

from .target.probe import HostFacts

# Distribution name -> requirement.
PACKAGES = {"jupyterlab": "jupyterlab>=4,<5", "bcrypt": "bcrypt>=4.1", "rmate": "rmate"}

# What a complete install step records last in the venv (``Layout.install_mark``; the probe reads it
# back): a run killed half-way (kill -9, a cut connection) records nothing, and the next run installs again.
INSTALLED_MARK = "".join(f"{requirement}\n" for requirement in PACKAGES.values())


def venv_ok(facts: HostFacts) -> bool:
    """The venv exists, was made by the target's current Python (same full version), and its
    creation finished (labhop's mark; pip in it, for venvs made before the mark existed)."""
    return (facts.venv_exists and facts.venv_version == ".".join(map(str, facts.python_version))
            and (facts.venv_complete or "pip" in facts.venv_packages))


def install_complete(facts: HostFacts) -> bool:
    return facts.venv_installed == INSTALLED_MARK


def missing_packages(facts: HostFacts) -> list[str]:
    """What provision must install: everything when the venv is to be (re)made, or when the
    last install did not finish (its packages may be there without their dependencies)."""
    ok = venv_ok(facts)
    if ok and not install_complete(facts):
        return list(PACKAGES)
    return [name for name in PACKAGES if not (ok and name in facts.venv_packages)]
