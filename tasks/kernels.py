"""The user's environments as Jupyter kernels: discovery facts -> kernelspec steps under labhop's prefix.

Pure. The probe (tasks/target/kernels.py, inside the one probe round trip) reports conda's
environments and the ones the inventory names (``kernels = [...]``, ``--kernel``), each with its
interpreter, Python version and whether ipykernel is installed, and the kernelspecs labhop
registered before. Each environment with ipykernel becomes ``<prefix>/share/jupyter/kernels/NAME/
kernel.json``, launched with the environment's own interpreter and what activating it would set
(``CONDA_PREFIX`` or ``VIRTUAL_ENV``, its ``bin/`` first on PATH). The server finds that directory
through its config (tasks/jupyter_config.py) and rescans it on every kernelspec request, so new
kernels need no restart; ``~/.local/share/jupyter`` is never written.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from . import shell
from .errors import UsageError
from .settings import HostSettings
from .steps import Command, Skip, Step, WriteFile
from .target.guard import guarded
from .target.layout import Layout

# ipykernel 6 (the oldest the JupyterLab 4 protocol is happy with) needs Python 3.8.
MIN_KERNEL_PYTHON = (3, 8)
ADD_FLAG = "--add-ipykernel"


@dataclass(frozen=True)
class Env:
    """One environment as the probe found it (see tasks/target/kernels.py ``describe``)."""

    given: str  # as named in the inventory / a flag, or conda's path
    source: str  # "named" | "conda"
    path: str  # absolute: the environment directory, or a bare interpreter
    prefix: Optional[str] = None  # the environment directory (sys.prefix for a bare interpreter)
    python: Optional[str] = None
    kind: Optional[str] = None  # "conda" | "venv" | "python" (a bare interpreter)
    version: Optional[tuple[int, ...]] = None
    ipykernel: Optional[str] = None  # its version ("" when known only to be there), None: not installed
    error: Optional[str] = None
    base: bool = False  # conda's base environment
    pip: bool = True  # pip is installed in it (uv's venvs have none)

    @property
    def name(self) -> str:
        """What the user calls it: conda's env name, the venv's directory (its project for ``.venv``)."""
        if self.kind == "python":
            return posixpath.basename(self.path)
        if self.base:
            return "base"
        name = posixpath.basename(self.path.rstrip("/"))
        if name in ("venv", ".venv", "env", ".env"):
            return posixpath.basename(posixpath.dirname(self.path.rstrip("/"))) or name
        return name

    @property
    def too_old(self) -> bool:
        return self.version is not None and tuple(self.version[:2]) < MIN_KERNEL_PYTHON

    def add_command(self) -> str:
        """The one command that adds ipykernel to this environment."""
        if self.kind == "conda":
            return shell.join(["conda", "install", "-p", self.prefix or self.path, "ipykernel"])
        if not self.pip:
            return shell.join(["uv", "pip", "install", "--python", self.python or self.path, "ipykernel"])
        return shell.join([self.python or self.path, "-m", "pip", "install", "ipykernel"])


@dataclass(frozen=True)
class KernelFacts:
    registered: dict[str, Optional[str]] = field(default_factory=dict)  # kernelspec name -> kernel.json text
    envs: Optional[tuple[Env, ...]] = None  # None: discovery was not asked for
    conda_source: Optional[str] = None  # conda's command or registry file the conda envs came from


def kernel_facts(raw: Optional[dict[str, Any]]) -> KernelFacts:
    """The probe's ``kernels`` entry (absent from an older probe: nothing known)."""
    if not raw:
        return KernelFacts()
    envs = None
    if raw.get("envs") is not None:
        envs = tuple(Env(given=e["given"], source=e["source"], path=e["path"], prefix=e.get("prefix"),
                         python=e.get("python"), kind=e.get("kind"),
                         version=tuple(e["version"]) if e.get("version") else None,
                         ipykernel=e.get("ipykernel"), error=e.get("error"), base=bool(e.get("base")),
                         pip=bool(e.get("pip", True)))
                     for e in raw["envs"])
    return KernelFacts(registered=dict(raw.get("registered") or {}), envs=envs, conda_source=raw.get("conda_source"))


def probe_request(settings: HostSettings) -> dict[str, Any]:
    """What the probe discovers: the named environments (also those named only by --add-ipykernel), conda's."""
    named = list(settings.kernels)
    named += [a for a in settings.add_ipykernel if _is_path(a) and a not in named]
    return {"named": named, "conda": settings.conda_kernels}


def _is_path(value: str) -> bool:
    return "/" in value or value.startswith("~")


@dataclass(frozen=True)
class Kernel:
    name: str  # the kernelspec directory (Jupyter's kernel name)
    display_name: str
    env: Env
    spec: str  # kernel.json text


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "env"


def _template_safe(path: str) -> str:
    """jupyter_client fills ``${VAR}`` in a kernelspec's env from its own: keep a ``$`` in a path literal."""
    return path.replace("$", "$$")


def render_spec(env: Env, display_name: str) -> str:
    """kernel.json: the environment's interpreter, and the variables activating it would set."""
    assert env.python is not None
    variables: dict[str, str] = {}
    if env.kind in ("conda", "venv") and env.prefix:
        if env.kind == "conda":
            variables["CONDA_PREFIX"] = env.prefix
            variables["CONDA_DEFAULT_ENV"] = env.name
        else:
            variables["VIRTUAL_ENV"] = env.prefix
        variables["PATH"] = _template_safe(posixpath.join(env.prefix, "bin")) + ":${PATH}"
    metadata: dict[str, Any] = {"labhop": {"environment": env.path, "source": env.source}}
    if env.ipykernel is None or env.ipykernel == "" or int((env.ipykernel.split(".")[0] or "0")) >= 6:
        metadata["debugger"] = True
    spec = {"argv": [env.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": display_name, "language": "python", "env": variables, "metadata": metadata}
    return json.dumps(spec, indent=1, sort_keys=True) + "\n"


def kernels_for(envs: list[Env], home: str) -> list[Kernel]:
    """Kernel names and display names, unique and stable: a name taken twice gets its path's digest."""
    names: dict[str, int] = {}
    displays: dict[str, int] = {}
    for env in envs:
        names[f"{env.kind}-{_slug(env.name)}"] = names.get(f"{env.kind}-{_slug(env.name)}", 0) + 1
        displays[env.name] = displays.get(env.name, 0) + 1
    kernels = []
    for env in envs:
        name = f"{env.kind}-{_slug(env.name)}"
        if names[name] > 1:
            name += "-" + hashlib.sha256(env.path.encode()).hexdigest()[:6]
        display = f"Python ({env.name})"
        if displays[env.name] > 1:
            display = f"Python ({env.name}, {_short(env.path, home)})"
        kernels.append(Kernel(name, display, env, render_spec(env, display)))
    return kernels


def _short(path: str, home: str) -> str:
    return "~" + path[len(home):] if home and path.startswith(home.rstrip("/") + "/") else path


def kernels_dir(layout: Layout) -> str:
    return layout.path("kernels_dir")


@dataclass
class KernelPlan:
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # environments left out, and the command that adds them
    problems: list[str] = field(default_factory=list)  # named environments that cannot be kernels (exit 2)


def plan_kernels(kernels: KernelFacts, settings: HostSettings, layout: Layout, *, home: str,
                 python: str, uv: Optional[str] = None) -> KernelPlan:
    """Steps that make the registered kernelspecs match the environments found.

    ``python``: the target's python3 (guards the ipykernel install, tasks/target/guard.py);
    ``uv``: the target's uv (installs into an environment without pip).
    """
    plan = KernelPlan()
    if kernels.envs is None:
        return plan
    envs = list(kernels.envs)
    add = _match_add_requests(envs, settings.add_ipykernel, home)
    usable: list[Env] = []
    for env in envs:
        where = f"`kernels` entry {env.given}" if env.source == "named" else f"conda environment {env.path}"
        if env.error or env.python is None:
            if env.source == "named":
                plan.problems.append(f"{where}: {env.error or 'has no python'}")
            elif env.python is None and env.kind == "conda":
                continue  # a conda environment without Python (R, tools): not a Python kernel
            else:
                plan.notes.append(f"{where}: {env.error}")
            continue
        if env.too_old:
            have = ".".join(map(str, env.version or ()))
            message = (f"{where}: Python {have} is too old for ipykernel "
                       f"(needs {'.'.join(map(str, MIN_KERNEL_PYTHON))}+)")
            (plan.problems if env.source == "named" else plan.notes).append(message)
            continue
        if env.ipykernel is None and env.path not in add:
            flag = f"{ADD_FLAG} {env.given if env.source == 'named' else env.name}"
            plan.notes.append(f"no kernel for {env.path} ({env.name}): it has no ipykernel; add it with "
                              f"`{env.add_command()}` (or {flag})")
            continue
        if env.ipykernel is None:
            plan.steps.append(Command(f"install ipykernel into {env.path} ({ADD_FLAG})",
                                      guarded(python, _install_command(env, uv or layout.venv_bin("uv")))))
            env = Env(**{**env.__dict__, "ipykernel": ""})
        usable.append(env)

    wanted = kernels_for(usable, home)
    directory = kernels_dir(layout)
    for kernel in wanted:
        path = posixpath.join(directory, kernel.name, "kernel.json")
        what = f"kernel {kernel.display_name} ({kernel.env.python})"
        if kernels.registered.get(kernel.name) == kernel.spec:
            plan.steps.append(Skip(what, "registered"))
        else:
            verb = "update" if kernel.name in kernels.registered else "register"
            plan.steps.append(WriteFile(f"{verb} {what}", path, kernel.spec, 0o600))
    stale = sorted(set(kernels.registered) - {k.name for k in wanted})
    if stale:
        gone = [posixpath.join(directory, name) for name in stale]
        plan.steps.append(Command(f"remove kernel(s) {', '.join(stale)}: environment gone, without ipykernel "
                                  f"or no longer listed", f"rm -rf {shell.join(gone)}"))
    return plan


def _install_command(env: Env, uv: str) -> str:
    """pip in the environment; uv's venvs have no pip: then uv (the target's, or the one in labhop's venv)."""
    py = env.python or env.path
    pip = shell.join([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "ipykernel"])
    with_uv = shell.join([uv, "pip", "install", "--quiet", "--python", py, "ipykernel"])
    missing = shell.q(f"{env.path} has no pip, and there is no uv to install with")
    return (f"if {shell.join([py, '-m', 'pip', '--version'])} >/dev/null 2>&1; then {pip}; "
            f"elif [ -x {shell.q(uv)} ]; then {with_uv}; else echo {missing} >&2; exit 1; fi")


def _match_add_requests(envs: list[Env], requests: tuple[str, ...], home: str) -> set[str]:
    """The paths of the environments --add-ipykernel names (a path, or a conda env's name)."""
    chosen: set[str] = set()
    for request in requests:
        expanded = posixpath.normpath(home + request[1:]) if request.startswith("~") else posixpath.normpath(request)
        found = [e for e in envs if e.given == request or e.path == expanded or
                 (not _is_path(request) and e.name == request)]
        if not found:
            known = ", ".join(sorted({e.name for e in envs if e.source == "conda"})) or "none"
            raise UsageError(f"{ADD_FLAG} {request}: no such environment (conda environments here: {known}; "
                             f"a venv or interpreter is named by its path)")
        chosen.update(e.path for e in found)
    return chosen


def kernel_lines(registered: list[dict[str, Any]]) -> list[str]:
    """``status``: one line per kernel labhop registered."""
    return [f"kernel: {k['display_name'] or k['name']} ({k['name']}): {k['python'] or 'unreadable kernel.json'}"
            for k in registered]


def registered_kernels(kernels: KernelFacts) -> list[dict[str, Any]]:
    """What ``status`` shows: each kernelspec labhop registered, its interpreter, the environment."""
    out = []
    for name, text in sorted(kernels.registered.items()):
        try:
            spec = json.loads(text or "")
            python = spec["argv"][0]
            display = spec.get("display_name", name)
            env = (spec.get("metadata", {}).get("labhop") or {}).get("environment")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            python = display = env = None
        out.append({"name": name, "display_name": display, "python": python, "environment": env})
    return out
