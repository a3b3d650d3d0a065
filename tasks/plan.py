"""Plans: inventory settings + options + probed facts -> ordered steps.

Pure. Every function here returns the steps needed to reach the wanted state,
and a ``Skip`` with its reason for each part already in place, so that a second
run changes nothing and says so.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

from . import shell
from .remote import source
from .errors import LabhopError, UsageError
from .target.guard import guarded
from .jupyter_config import ServerSettings, render
from .target.layout import PROFILE_BEGIN, PROFILE_END, RMATE_LINK, Layout, expand_home
from .offline.install import installer_uv, offline_reason, plan_push, require_manifest, venv_command
from .offline.install import install_step as offline_install_step
from .offline.online import online_install_command, online_venv_command, plan_uv
from .target.probe import MIN_PYTHON, HostFacts
from .serving import restart_refusal
from .settings import HostSettings
from .steps import Command, Skip, Step, WriteFile
from .offline.wheelhouse import Manifest
from .packages import (PACKAGES, install_complete, installed_mark, installed_versions,
                       missing_packages, unlisted_packages, venv_ok, wanted_packages)

READY_TIMEOUT = 90


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said after the steps (environments left without a kernel)
    # Inventory entries that could not be honoured (a named environment that is not one): the rest of
    # the plan still runs, then the task exits 2 naming them.
    problems: list[str] = field(default_factory=list)

    def extend(self, other: "Plan") -> None:
        self.steps.extend(other.steps)
        self.warnings.extend(other.warnings)
        self.notes.extend(other.notes)
        self.problems.extend(other.problems)


def layout_for(facts: HostFacts) -> Layout:
    return Layout(prefix=facts.prefix)


def require_python(facts: HostFacts) -> None:
    if not facts.python_ok:
        have = ".".join(map(str, facts.python_version))
        need = ".".join(map(str, MIN_PYTHON))
        raise LabhopError(f"{facts.python_executable} is Python {have}; labhop needs Python >= {need} on the target")


# -- provision ---------------------------------------------------------------------------------

# Free space a plan needs below the prefix before it starts (so that it fails before writing
# anything rather than half-way): a fresh venv with JupyterLab takes about 280 MiB.
ROOM_FOR_VENV = 350 << 20
ROOM_FOR_INSTALL = 64 << 20
ROOM_FOR_FILES = 1 << 20


def require_room(facts: HostFacts, plan: Plan) -> None:
    """Refuse, in one line, a plan that would write below a read-only or full prefix."""
    room = facts.room
    if room is None or all(isinstance(step, Skip) for step in plan.steps):
        return
    if not room.writable:
        raise LabhopError(f"cannot write below {facts.prefix}: {room.dir} is read-only "
                          f"(or not writable by {facts.user or 'the target user'}); set `prefix` in the inventory "
                          f"to a writable directory")
    need, what = ROOM_FOR_FILES, "writing the server's files"
    if not venv_ok(facts):
        need, what = ROOM_FOR_VENV, "a virtual environment with JupyterLab"
    elif any(isinstance(step, Command) and step.description.startswith("install ")
             and f" into {posixpath.join(facts.prefix, 'venv')}" in step.description for step in plan.steps):
        need, what = ROOM_FOR_INSTALL, "installing the missing packages"
    if room.free < need:
        raise LabhopError(f"only {_mib(room.free)} free below {room.dir}; {what} needs about {_mib(need)}: "
                          f"free some space or set `prefix` in the inventory to a roomier place")


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.0f} MiB" if size >= (1 << 20) else f"{size // 1024} KiB"


def completing(step: Command, facts: HostFacts, mark: str, text: str = "") -> Command:
    """``step`` guarded (it dies with this run, tasks/target/guard.py) and leaving ``mark`` last."""
    command = (f"rm -f {shell.q(mark)} && {guarded(facts.python_executable, step.command)} && "
               f"printf %s {shell.q(text)} > {shell.q(mark)}")
    return replace(step, command=command)


def plan_provision(facts: HostFacts, settings: HostSettings, wheelhouse: Optional[Manifest] = None) -> Plan:
    """``wheelhouse``: the controller's wheels for this target, needed when it installs offline."""
    require_python(facts)
    layout = layout_for(facts)
    plan = Plan()
    steps = plan.steps

    if facts.prefix_exists:
        steps.append(Skip(f"directory {layout.prefix}", "exists"))
    else:
        steps.append(Command(f"create {layout.prefix} (0700)", shell.mkdir_private(layout.prefix)))

    wanted = wanted_packages(settings)
    missing = missing_packages(facts, settings)
    offline = offline_reason(facts, settings) if missing else None
    manifest = require_manifest(wheelhouse, offline) if offline else None
    if manifest is not None:
        steps.extend(plan_push(facts, layout, manifest))
        uv, how = installer_uv(facts, layout, manifest), ""
    elif missing:  # online: uv comes over SSH too (``wheelhouse`` then holds uv alone)
        uv_steps, uv, how = plan_uv(facts, layout, wheelhouse)
        steps.extend(uv_steps)
    else:
        uv, how = facts.uv, ""

    wanted_version = ".".join(map(str, facts.python_version))
    if venv_ok(facts):
        steps.append(Skip(f"virtual environment {layout.venv}", f"exists (Python {wanted_version})"))
    else:
        why = ("create" if not facts.venv_exists else
               f"recreate (was Python {facts.venv_version})" if facts.venv_version != wanted_version else
               "recreate (its creation was interrupted)")
        description = f"{why} virtual environment {layout.venv} with Python {wanted_version}"
        if manifest is not None:
            venv = Command(description + (" (uv)" if uv else ""), venv_command(uv, facts.python_executable, layout.venv)
                           if uv else shell.join([facts.python_executable, "-m", "venv", "--clear", layout.venv]))
        else:  # uv if it runs here, which the command finds out (and says)
            venv = Command(description, online_venv_command(uv, facts.python_executable, layout.venv), note=bool(uv))
        steps.append(completing(venv, facts, layout.venv_mark))

    install_mark = layout.install_mark
    mark = installed_mark(settings)
    unfinished = venv_ok(facts) and not install_complete(facts)
    extras = [n for n in wanted if n not in PACKAGES]
    left = unlisted_packages(facts, settings)
    if missing and manifest is not None and offline:
        step = offline_install_step(facts, layout, manifest, [wanted[n] for n in missing], missing)
        steps.append(completing(step, facts, install_mark, mark))
    elif missing:
        step = install_step(facts, layout, missing, uv, how, [wanted[n] for n in missing])
        if unfinished:
            step = replace(step, description=f"{step.description} (the last install did not finish)")
        if left:  # its mark replaces the record: say what the list dropped (see unlisted_packages)
            step = replace(step, description=f"{step.description}; {', '.join(left)} no longer listed, "
                                             f"left installed")
        steps.append(completing(step, facts, install_mark, mark))
    else:
        have = installed_versions(facts)
        versions = ", ".join(f"{n} {have[n]}" for n in wanted)
        steps.append(Skip(f"install JupyterLab, bcrypt, rmate{''.join(', ' + n for n in extras)}",
                          f"installed ({versions})"))
        if left:
            # Only the record changes: what the list no longer names stays installed (see unlisted_packages).
            names = ", ".join(left)
            steps.append(WriteFile(f"record the venv's packages: {names} no longer listed, left installed "
                                   f"(`{layout.venv_python} -m pip uninstall` removes them)", install_mark, mark))

    plan.extend(plan_rmate_on_path(facts, layout))
    plan.extend(plan_kernel_steps(facts, settings, layout))
    require_room(facts, plan)
    return plan


def plan_kernel_steps(facts: HostFacts, settings: HostSettings, layout: Layout) -> Plan:
    """The user's environments as kernels (tasks/kernels.py), from what the probe discovered."""
    from .kernels import kernel_facts, plan_kernels

    kernels = plan_kernels(kernel_facts(facts.kernels), settings, layout, home=facts.home,
                           python=facts.python_executable, uv=facts.uv)
    return Plan(steps=kernels.steps, notes=kernels.notes, problems=kernels.problems)


def install_step(facts: HostFacts, layout: Layout, missing: list[str], uv: Optional[str] = None,
                 how: str = "", requirements: Optional[list[str]] = None) -> Command:
    """Install the missing packages from the target's index: with ``uv`` (tasks/offline/online.py:
    the target's pip settings, the system trust store) when it runs there, else with pip."""
    index = f" from {facts.index.url}" if facts.index is not None else ""
    return Command(f"install {', '.join(missing)} into {layout.venv}{index}",
                   online_install_command(facts.python_executable, uv, how, layout.venv_python,
                                          requirements if requirements is not None else
                                          [PACKAGES[name] for name in missing]), note=True)


def plan_rmate_on_path(facts: HostFacts, layout: Layout) -> Plan:
    """Link rmate into bin_dir and make sure a login shell finds it there."""
    plan = Plan()
    target = layout.path("venv_rmate")
    link = posixpath.join(facts.bin_dir, RMATE_LINK)
    if facts.rmate_link == target:
        plan.steps.append(Skip(f"link {link}", f"points to {target}"))
    elif facts.rmate_link_dangling:
        # Its target is gone (a deleted labhop prefix, say): replacing it loses nothing.
        plan.steps.append(Command(f"link {link} -> {target} (replacing a dangling link to {facts.rmate_link})",
                                  f"mkdir -p {shell.q(facts.bin_dir)} && ln -sfn {shell.q(target)} {shell.q(link)}"))
    elif facts.rmate_link is not None and not (facts.rmate_link.startswith(facts.prefix) or facts.rmate_link_labhop):
        # Someone else's rmate: never replace what labhop did not put there.
        plan.steps.append(Skip(f"link {link}", f"left alone: {facts.rmate_link} is not labhop's"))
        plan.warnings.append(f"{link} exists and is not labhop's; `rmate` may not be the one labhop installed")
    else:
        plan.steps.append(Command(f"link {link} -> {target}",
                                  f"mkdir -p {shell.q(facts.bin_dir)} && ln -sfn {shell.q(target)} {shell.q(link)}"))

    on_path = facts.login_path is not None and facts.bin_dir in facts.login_path.split(":")
    profile = login_profile(facts)
    if on_path:
        plan.steps.append(Skip(f"{facts.bin_dir} on the login PATH", "already there"))
    elif facts.profiles.get(profile):
        plan.steps.append(Skip(f"{facts.bin_dir} on the login PATH", f"~/{profile} has labhop's block for it"))
    else:
        block = (f"{PROFILE_BEGIN}\ncase \":$PATH:\" in *:{shell.q(facts.bin_dir)}:*) ;; "
                 f"*) PATH={shell.q(facts.bin_dir)}:\"$PATH\"; export PATH ;; esac\n{PROFILE_END}\n")
        path = posixpath.join(facts.home, profile)
        plan.steps.append(Command(f"add {facts.bin_dir} to the login PATH in ~/{profile}",
                                  f"printf '\\n%s' {shell.q(block)} >> {shell.q(path)}"))
    return plan


def login_profile(facts: HostFacts) -> str:
    """The profile file the user's login shell reads first (the one to append to)."""
    if facts.shell.endswith("zsh"):
        return ".zprofile"
    for name in (".bash_profile", ".bash_login"):
        if facts.shell.endswith("bash") and name in facts.profiles:
            return name
    return ".profile"


# -- serve -------------------------------------------------------------------------------------

def server_settings(facts: HostFacts, settings: HostSettings, *, token: Optional[str],
                    hashed_password: Optional[str], certfile: Optional[str] = None,
                    keyfile: Optional[str] = None) -> ServerSettings:
    return ServerSettings(
        ip=settings.ip, port=settings.port, root_dir=expand_home(settings.root_dir, facts.home),
        public=settings.public, token=None if settings.public else token,
        hashed_password=hashed_password if settings.public else None,
        allow_root=facts.is_root, certfile=certfile, keyfile=keyfile,
        data_dir=layout_for(facts).path("data_dir"), pin_notebook_app=bool(facts.notebook_app_files))


def plan_serve(facts: HostFacts, settings: HostSettings, server: ServerSettings,
               *, ready_timeout: int = READY_TIMEOUT, files: Sequence[Step] = (),
               wheelhouse: Optional[Manifest] = None, restart: bool = False) -> Plan:
    """``files``: steps for files the server reads at start (the TLS pair, tasks/certs.py);
    when one of them changes, a running server is restarted to pick it up, but one with running
    kernels only when ``restart`` (--restart) says so.
    ``wheelhouse``: as for plan_provision."""
    if facts.root_dir_exists is False:
        raise UsageError(f"root dir {server.root_dir} is not a directory on the target: create it, or name "
                         f"another with --root-dir")
    plan = plan_provision(facts, settings, wheelhouse)
    layout = layout_for(facts)
    if facts.is_root:
        plan.warnings.append("the target user is root: Jupyter runs with allow_root; a normal user is safer")
    plan.steps.extend(files)
    if facts.notebook_app_files:
        plan.warnings.append(f"old NotebookApp settings in {', '.join(facts.notebook_app_files)}: labhop's config "
                             f"repeats its values under NotebookApp so that they win (JupyterLab logs a "
                             f"'has moved' warning for each)")

    config = render(server)
    config_changed = config != facts.config
    if config_changed:
        plan.steps.append(WriteFile(f"write {layout.config_file}", layout.config_file, config, 0o600))
    else:
        plan.steps.append(Skip(f"write {layout.config_file}", "unchanged"))

    files_changed = any(not isinstance(step, Skip) for step in files)
    running = facts.server.alive
    if running and not config_changed and not files_changed:
        plan.steps.append(Skip("start JupyterLab", f"already running with this config (pid {facts.server.pid})"))
        return plan
    if running:
        refusal = restart_refusal(facts, config, files_changed=files_changed, restart=restart)
        if refusal:
            raise LabhopError(refusal)
        why = "config changed" if config_changed else "TLS certificate changed"
        plan.steps.append(stop_step(facts, f"restart: stop JupyterLab ({why})"))
    elif facts.port_free is False:
        raise LabhopError(f"port {server.port} on {server.ip} is busy on the target; "
                          f"pick another with --port")
    start = start_step(facts, layout, server)
    if not running and facts.server.pid is not None:  # a pid file whose process is gone: killed or crashed
        start = replace(start, description=f"{start.description} (again: pid {facts.server.pid} died unexpectedly)")
    plan.steps.append(start)
    plan.steps.append(wait_step(layout, server, ready_timeout))
    require_room(facts, plan)
    return plan


def launch_command(facts: HostFacts, layout: Layout, server: ServerSettings, *, under_tmux: bool) -> str:
    """The process itself: records its pid, then becomes jupyter lab (exec) with its own config dir.

    Under tmux stdin stays on the pane's tty: tmux closes (SIGHUPs) a pane as soon as
    no process holds its tty any more, which a full redirection would do.
    """
    lab_dir = posixpath.join(facts.home, ".jupyter", "lab")
    env = [
        f"JUPYTER_CONFIG_DIR={layout.config_dir}",
        # Keep the user's JupyterLab settings and workspaces where they always were.
        f"JUPYTERLAB_SETTINGS_DIR={posixpath.join(lab_dir, 'user-settings')}",
        f"JUPYTERLAB_WORKSPACES_DIR={posixpath.join(lab_dir, 'workspaces')}",
    ]
    # Our config dir must be the first place Jupyter looks: JUPYTER_CONFIG_PATH (from a
    # ~/.bashrc) would come before it, and in a venv jupyter_core puts the venv's etc/jupyter
    # first unless JUPYTER_PREFER_ENV_PATH=0.
    env.append("JUPYTER_PREFER_ENV_PATH=0")
    # Output goes to the log before anything can fail (a missing root dir, a broken venv), and the pid
    # is recorded first: a start that dies is seen at once by the wait step, with its reason in the log.
    return (f"exec >> {shell.q(layout.log_file)} 2>&1" + ("" if under_tmux else " < /dev/null") + "; "
            f"echo $$ > {shell.q(layout.pid_file)} && cd {shell.q(server.root_dir)} && "
            f"exec env -u JUPYTER_CONFIG_PATH {shell.join(env)} {shell.q(layout.venv_bin('jupyter'))} lab")


def start_step(facts: HostFacts, layout: Layout, server: ServerSettings) -> Command:
    inner = shell.join(["sh", "-c", launch_command(facts, layout, server, under_tmux=bool(facts.tmux))])
    rotate = (f"rm -f {shell.q(layout.pid_file)} && "
              f"{{ [ ! -f {shell.q(layout.log_file)} ] || "
              f"mv -f {shell.q(layout.log_file)} {shell.q(layout.log_file + '.1')}; }} && "
              f"(umask 077 && : > {shell.q(layout.log_file)})")
    if facts.tmux:
        name = layout.session_name
        command = (f"{rotate} && "
                   f"{{ {shell.q(facts.tmux)} kill-session -t {shell.q('=' + name)} 2>/dev/null; true; }} && "
                   f"{shell.q(facts.tmux)} new-session -d -s {shell.q(name)} {shell.q(inner)}")
        return Command(f"start JupyterLab in tmux session {name} on {server.ip}:{server.port}", command)
    command = f"{rotate} && nohup {inner} > /dev/null 2>&1 < /dev/null &"
    return Command(f"start JupyterLab with nohup on {server.ip}:{server.port} (tmux not found)", command)




def probe_url(server: ServerSettings) -> str:
    host = "127.0.0.1" if server.ip in ("0.0.0.0", "127.0.0.1") else server.ip
    if ":" in host:
        host = f"[{host}]"
    return f"{server.scheme}://{host}:{server.port}/api"


def wait_step(layout: Layout, server: ServerSettings, timeout: int) -> Command:
    argv = [layout.venv_python, "-c", source("wait_ready.py"), probe_url(server), layout.pid_file, layout.log_file,
            str(timeout)]
    return Command(f"wait until JupyterLab answers (up to {timeout}s)", shell.join(argv))


# -- stop --------------------------------------------------------------------------------------



def stop_step(facts: HostFacts, description: str = "stop JupyterLab") -> Command:
    """tasks/remote/stop.sh: TERM, then KILL, the server; its pid file and tmux session go with it."""
    layout = layout_for(facts)
    tmux = [facts.tmux, layout.session_name] if facts.tmux else []
    script = shell.join(["sh", "-c", source("stop.sh"), "stop.sh", str(facts.server.pid), layout.pid_file, *tmux])
    return Command(f"{description} (pid {facts.server.pid})", script)


def plan_stop(facts: HostFacts) -> Plan:
    if not facts.server.alive and facts.server.pid is not None:
        # It died behind labhop's back: forget it, so that status stops reporting a death.
        what = f"remove the stale pid file of JupyterLab (pid {facts.server.pid} died unexpectedly)"
        return Plan(steps=[Command(what, f"rm -f {shell.q(layout_for(facts).pid_file)}")])
    if not facts.server.alive:
        return Plan(steps=[Skip("stop JupyterLab", "not running")])
    return Plan(steps=[stop_step(facts)])
