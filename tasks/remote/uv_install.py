"""Installs requirements into the venv with uv, handing it the target's pip settings; pip if uv cannot run.

Shipped as ``python3 -c`` by tasks/offline/online.py ``online_install_command``. Prints which installer
it used, then becomes that installer (exec: the guard kills it with the run). Settings are read here,
at install time, and never leave the target: an index URL may carry a password. By hand:
``python3 uv_install.py UV HOW VENV_PYTHON REQUIREMENT...`` (UV "" when there is none; HOW: where uv came from).
"""
import configparser
import os
import subprocess
import sys
from typing import Optional

KEYS = ("index-url", "extra-index-url", "find-links", "no-index", "cert", "client-cert", "trusted-host", "constraint")


def pip_config(env: dict[str, str]) -> dict[str, list[str]]:
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
    found: dict[str, str] = {}
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


def version(uv: str) -> tuple[Optional[str], Optional[str]]:
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


def uv_env(pip: dict[str, list[str]], uv_version: str) -> dict[str, str]:
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


def main(uv: str, how: str, python: str, requirements: list[str]) -> None:
    env = dict(os.environ)
    pip = pip_config(env)
    found, why = version(uv) if uv else (None, "no uv for this host")
    if found:
        env.update(uv_env(pip, found))
        no_index = pip.get("no-index", ["no"])[0].lower() in ("1", "true", "yes", "on")
        argv = [uv, "pip", "install", "--quiet", "--python", python] + (["--no-index"] if no_index else [])
        argv += requirements
        print("with uv %s (%s)" % (found, how))
    else:
        # A venv made by uv has no pip: give it one first.
        if subprocess.call([python, "-m", "pip", "--version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
            subprocess.check_call([python, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
        argv = [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet"] + requirements
        if uv:  # gone: the unpack step found it cannot run here, and said why
            why = "uv does not run here" + (": %s" % why if os.path.exists(uv) else "")
        print("with pip (%s)" % why)
    sys.stdout.flush()
    os.execve(argv[0], argv, env)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
