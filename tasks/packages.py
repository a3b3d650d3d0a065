"""What provision installs into the target's venv, and what of it is missing there.

Pure. The plan (tasks/plan.py), the wheelhouse for air-gapped targets (tasks/offline/wheelcache.py)
and the probe's arguments (tasks/executor.py) all read the one list here: labhop's own packages,
then the user's ``packages = [...]`` / ``--with`` (pip's requirements, PEP 508: ``numpy``,
``pandas==2.2.*``, ``name @ URL``; a bad one is a usage error before anything connects).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Optional

from .target.probe import HostFacts

if TYPE_CHECKING:
    from .settings import HostSettings

# Distribution name -> requirement.
PACKAGES = {"jupyterlab": "jupyterlab>=4,<5", "bcrypt": "bcrypt>=4.1", "rmate": "rmate"}

# What a complete install step records last in the venv (``Layout.install_mark``; the probe reads it
# back): the requirements installed, one a line. A run killed half-way (kill -9, a cut connection)
# records nothing, and the next run installs again. This is the record without extra packages.
INSTALLED_MARK = "".join(f"{requirement}\n" for requirement in PACKAGES.values())


def requirement_error(text: object) -> Optional[str]:
    """Why ``text`` is not a requirement pip would take, or None."""
    if not isinstance(text, str) or not text.strip():
        return f"{text!r} is not a requirement (a string like \"numpy\" or \"pandas==2.2.*\")"
    if text.strip().startswith("-"):
        return f"{text!r} is a pip option, not a requirement"
    from packaging.requirements import InvalidRequirement, Requirement  # 20 ms: only for the user's own packages
    try:
        Requirement(text)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]
        return f"{text!r} is not a valid requirement ({reason})"
    return None


def project_of(requirement: str) -> str:
    """``pandas==2.2.*`` -> ``pandas`` (normalized as PEP 503 does, like the probe's package names)."""
    from packaging.requirements import Requirement
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def wanted_packages(settings: Optional[HostSettings] = None) -> dict[str, str]:
    """Project name -> requirement: labhop's own, then the user's ``packages`` / ``--with``
    (a requirement of the same name, ``jupyterlab==4.2.*``, replaces labhop's)."""
    wanted = dict(PACKAGES)
    for requirement in (settings.packages if settings else ()):
        wanted[project_of(requirement)] = requirement.strip()
    return wanted


def installed_mark(settings: Optional[HostSettings] = None) -> str:
    """What the install step records: every requirement now wanted."""
    return "".join(f"{requirement}\n" for requirement in wanted_packages(settings).values())


def venv_ok(facts: HostFacts) -> bool:
    """The venv exists, was made by the target's current Python (same full version), and its
    creation finished (labhop's mark; pip in it, for venvs made before the mark existed)."""
    return (facts.venv_exists and facts.venv_version == ".".join(map(str, facts.python_version))
            and (facts.venv_complete or "pip" in facts.venv_packages))


def install_complete(facts: HostFacts) -> bool:
    """The last install step finished (it leaves the requirements it installed as its mark)."""
    return facts.venv_installed is not None and facts.venv_installed != ""


def installed_versions(facts: HostFacts) -> dict[str, str]:
    """The venv's distributions under PEP 503 names (the probe keeps dots: zope.interface)."""
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in facts.venv_packages.items()}


def missing_packages(facts: HostFacts, settings: Optional[HostSettings] = None) -> list[str]:
    """What provision must install: everything when the venv is to be (re)made, or when the
    last install did not finish (its packages may be there without their dependencies);
    else what is not installed, or not installed as the requirement now reads."""
    wanted = wanted_packages(settings)
    if not venv_ok(facts) or not install_complete(facts):
        return list(wanted)
    recorded = set((facts.venv_installed or "").splitlines())
    have = installed_versions(facts)
    return [name for name, requirement in wanted.items() if name not in have or requirement not in recorded]


def unlisted_packages(facts: HostFacts, settings: Optional[HostSettings] = None) -> list[str]:
    """Requirements the last install recorded that are no longer wanted: left installed, not
    uninstalled (another package may need them; a shared dependency cannot be told from a leftover)."""
    if not venv_ok(facts) or not install_complete(facts):
        return []
    wanted = set(wanted_packages(settings).values())
    base = set(PACKAGES.values())  # labhop's own requirements change with labhop, not with the user's list
    return [r for r in (facts.venv_installed or "").splitlines() if r and r not in wanted and r not in base]
