"""Installing on a target that reaches its package index: with uv brought over SSH.

Pure. uv installs JupyterLab several times faster than pip, but a uv installed by pip on the
target came from the index at pip's speed, trusts only its own built-in roots (behind a
TLS-terminating proxy: "invalid peer certificate: UnknownIssuer") and reads none of pip's
configuration. So, as the offline path does (tasks/offline/install.py), the controller's cached uv
wheel for the target's signature (tasks/offline/wheelcache.py) travels over the run's SSH
connection and is unpacked to ``<prefix>/bin/uv``; ``UV_INSTALL_SOURCE`` then runs it on the
target with the target's pip settings (index-url, extra-index-url, find-links, cert, ...) handed
over as uv's own variables, and with the system trust store. Those settings are read on the
target at install time and never leave it: an index URL may carry a password.

pip installs only when uv cannot run there (a prefix mounted noexec, a binary the host refuses);
the install step's line says which one did (the last line it prints, see steps.Command.note).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

from .. import shell
from ..target.layout import Layout
from ..target.probe import HostFacts
from ..steps import Command, Step
from .install import plan_push, venv_command
from .wheelhouse import Manifest

# Runs on the target's python3. argv: UV ("" when there is none) HOW VENV_PYTHON REQUIREMENT...
# Prints which installer it used, then becomes that installer (exec: the guard kills it with the run).
UV_INSTALL_SOURCE = r'''
import configparser, os, subprocess, sys
uv, how, python, requirements = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
env = dict(os.environ)
KEYS = ("index-url", "extra-index-url", "find-links", "no-index", "cert", "client-cert", "trusted-host", "constraint")
def pip_config():
    """pip's install settings, read as pip reads them (pip/_internal/configuration.py): site-wide
    files, the user's (not when PIP_CONFIG_FILE names a file; no file at all when it is os.devnull),
    PIP_CONFIG_FILE; [install] over [global], a later file over an earlier one, PIP_* over all."""
    home = os.path.expanduser("~")
    named = env.get("PIP_CONFIG_FILE")
    files = [os.path.join(d, "pip", "pip.conf") for d in (env.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":")]
    files.append("/etc/pip.conf")
    if not (named and os.path.exists(named)):
        xdg = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
        files += [os.path.join(home, ".pip", "pip.conf"), os.path.join(xdg, "pip", "pip.conf")]
    files += [named] if named else []
    found = {}
    for section in ("global", "install") if named != os.devnull else ():
        for path in files:
            parser = configparser.RawConfigParser()
            try:
                parser.read(path)
            except configparser.Error:
                continue
            for key in KEYS:
                if parser.has_option(section, key):
                    found[key] = parser.get(section, key)
    for key in KEYS:
        if env.get("PIP_" + key.upper().replace("-", "_")):
            found[key] = env["PIP_" + key.upper().replace("-", "_")]
    return {key: value.split() for key, value in found.items() if value.split()}
def version(uv):
    """uv's version ("0.13.9"), or None when it cannot run on this host, with the reason."""
    try:
        out = subprocess.run([uv, "--version"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return None, str(getattr(e, "strerror", None) or e)
    text = out.stdout.decode("utf-8", "replace").strip()
    if out.returncode != 0 or not text.startswith("uv "):
        return None, (text.splitlines() or ["exit %d" % out.returncode])[-1][:200]
    return text.split()[1], None
def uv_env(pip, uv_version):
    """pip's settings as uv's variables (uv reads no pip.conf), and the system trust store."""
    numbers = tuple(int(n) for n in uv_version.split(".")[:2] if n.isdigit())
    # uv 0.11 renamed --native-tls to --system-certs and warns about the old spelling.
    out = {"UV_SYSTEM_CERTS" if numbers >= (0, 11) else "UV_NATIVE_TLS": "1", "UV_PYTHON_DOWNLOADS": "never"}
    spread = {"index-url": ("UV_INDEX_URL", " "), "extra-index-url": ("UV_EXTRA_INDEX_URL", " "),
              "find-links": ("UV_FIND_LINKS", ","), "trusted-host": ("UV_INSECURE_HOST", " "),
              "constraint": ("UV_CONSTRAINT", " "), "client-cert": ("SSL_CLIENT_CERT", " ")}
    for key, (var, sep) in spread.items():
        if key in pip:
            out[var] = pip[key][0] if key in ("index-url", "client-cert") else sep.join(pip[key])
    if "cert" in pip:
        out["SSL_CERT_DIR" if os.path.isdir(pip["cert"][0]) else "SSL_CERT_FILE"] = pip["cert"][0]
    if "extra-index-url" in pip:
        out["UV_INDEX_STRATEGY"] = "unsafe-best-match"  # pip's rule: the best version from any index
    return out
pip = pip_config()
found, why = version(uv) if uv else (None, "no uv for this host")
if found:
    env.update(uv_env(pip, found))
    no_index = pip.get("no-index", ["no"])[0].lower() in ("1", "true", "yes", "on")
    argv = [uv, "pip", "install", "--quiet", "--python", python] + (["--no-index"] if no_index else []) + requirements
    print("with uv %s (%s)" % (found, how))
else:
    # A venv made by uv has no pip: give it one first.
    if subprocess.call([python, "-m", "pip", "--version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        subprocess.check_call([python, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
    argv = [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet"] + requirements
    if uv:  # gone: the unpack step found it cannot run here, and said why
        why = "uv does not run here" + (": " + why if os.path.exists(uv) else "")
    print("with pip (%s)" % why)
sys.stdout.flush()
os.execve(argv[0], argv, env)
'''


def uv_runs(uv: str) -> str:
    """A shell test: ``uv`` runs on this host."""
    return f"{shell.q(uv)} --version >/dev/null 2>&1"


def plan_uv(facts: HostFacts, layout: Layout, manifest: Optional[Manifest]) -> tuple[list[Step], Optional[str], str]:
    """Bring uv for an online install: (steps, the uv the install will try, where it came from).

    labhop's own copy when an earlier run unpacked it; else the controller's uv wheel, pushed
    and unpacked (as offline); else the target's own uv on PATH; else none (pip).
    """
    own = layout.own_uv
    if facts.uv == own:
        return [], own, "brought over SSH"
    if manifest is not None and (manifest.uv_wheel or manifest.pending):
        # plan_push unpacks uv only where the probe found none: here the target's PATH does not count.
        steps = [tolerant_unpack(step, own) for step in plan_push(replace(facts, uv=None), layout, manifest)]
        return steps, own, "brought over SSH"
    if facts.uv:
        return [], facts.uv, f"{facts.uv}, found on the target"
    return [], None, ""


def tolerant_unpack(step: Step, own: str) -> Step:
    """Online, a uv that cannot run here is no failure: pip installs instead, and the line says why."""
    if not (isinstance(step, Command) and step.description.startswith("unpack uv")):
        return step
    last_line = "$(printf '%s' \"$err\" | tail -n 1)"
    command = (f"if err=$({step.command} 2>&1 >/dev/null); then echo '(it runs here)'; "
               f"else rm -f {shell.q(own + '.tmp')}; "
               f"printf '(it does not run here, pip installs instead: %s)\\n' \"{last_line}\"; fi")
    return replace(step, command=command, note=True)


def online_venv_command(uv: Optional[str], python: str, venv: str) -> str:
    """uv's venv (no ensurepip: seconds faster) when uv runs here, else Python's own."""
    plain = shell.join([python, "-m", "venv", "--clear", venv])
    if uv is None:
        return plain
    return f"if {uv_runs(uv)}; then {venv_command(uv, python, venv)} && echo '(uv)'; else {plain} && echo '(venv)'; fi"


def online_install_command(python: str, uv: Optional[str], how: str, venv_python: str, requirements: list[str]) -> str:
    return shell.join([python, "-c", UV_INSTALL_SOURCE, uv or "", how, venv_python, *requirements])
