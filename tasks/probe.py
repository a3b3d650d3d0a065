"""Facts about a target, gathered in one round trip.

``PROBE_SOURCE`` runs on the target under its own python3 (fed on stdin, so no
quoting games and nothing long in an argv) and prints one JSON document;
``parse_facts`` turns it into ``HostFacts``. Both are pure text here: the
executor does the running.

The probe is written for old interpreters too (no f-strings, no annotations) so
that a too-old python3 still reports its version and gets a clear error.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import LabhopError

PROBE_SOURCE = r'''
import json, os, sys, platform
out = {"python": {"executable": sys.executable, "version": list(sys.version_info[:3]),
                  "implementation": platform.python_implementation()}}
if sys.version_info < (3, 6):
    print(json.dumps(out)); sys.exit(0)
import glob, pwd, shutil, socket, subprocess, errno
args = json.loads(sys.argv[1])
home = os.path.expanduser("~")
def expand(p):
    if p == "~": return home
    if p.startswith("~/"): return os.path.join(home, p[2:])
    return p
def read(path, limit=1 << 20):
    try:
        with open(path) as f: return f.read(limit)
    except (IOError, OSError): return None
prefix = expand(args["prefix"]); bin_dir = expand(args["bin_dir"])
venv = os.path.join(prefix, "venv")
pw = pwd.getpwuid(os.getuid())
out.update({"user": pw.pw_name, "uid": os.getuid(), "home": home,
            "shell": os.environ.get("SHELL") or pw.pw_shell, "hostname": socket.gethostname(),
            "prefix": prefix, "prefix_exists": os.path.isdir(prefix), "bin_dir": bin_dir,
            "tmux": shutil.which("tmux"), "uv": shutil.which("uv")})
# Virtual environment: interpreter version and installed distributions.
cfg = read(os.path.join(venv, "pyvenv.cfg")) or ""
venv_version = None
for line in cfg.splitlines():
    key, _, value = line.partition("=")
    if key.strip() in ("version", "version_info"):
        venv_version = value.strip()
packages = {}
for info in glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "*.dist-info")):
    name, _, rest = os.path.basename(info)[:-len(".dist-info")].partition("-")
    packages[name.lower().replace("_", "-")] = rest
out["venv"] = {"exists": os.path.isfile(os.path.join(venv, "bin", "python")),
               "version": venv_version, "packages": packages}
link = os.path.join(bin_dir, "rmate")
out["rmate_link"] = os.readlink(link) if os.path.islink(link) else (link if os.path.exists(link) else None)
# What a login shell sees: is bin_dir on its PATH, which profile file would it read?
login_path = None
try:
    login_path = subprocess.check_output([out["shell"], "-lc", 'printf %s "$PATH"'],
        stdin=open(os.devnull), stderr=open(os.devnull, "w"), timeout=10).decode()
except Exception:
    pass
out["login_path"] = login_path
out["profiles"] = {}
for name in (".bash_profile", ".bash_login", ".profile", ".zprofile"):
    text = read(os.path.join(home, name))
    if text is not None:
        out["profiles"][name] = "# >>> labhop >>>" in text
# Jupyter config and server.
out["config"] = read(os.path.join(prefix, "jupyter", "jupyter_server_config.py"))
# The public variant's TLS pair (tasks/certs.py): the certificate is public; of the key only a
# digest travels back, and the target's own ssl module says whether the two belong together.
tls_cert = os.path.join(prefix, "tls", "cert.pem"); tls_key = os.path.join(prefix, "tls", "key.pem")
tls = {"cert": read(tls_cert), "key_sha256": None, "pair_ok": None}
try:
    import hashlib
    with open(tls_key, "rb") as f: tls["key_sha256"] = hashlib.sha256(f.read()).hexdigest()
except (IOError, OSError):
    pass
if tls["cert"] and tls["key_sha256"]:
    try:
        import ssl
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(tls_cert, tls_key); tls["pair_ok"] = True
    except ImportError:
        pass
    except Exception:
        tls["pair_ok"] = False
out["tls"] = tls
# The address SSH reached this host at: one of the names its certificate carries.
ssh_connection = (os.environ.get("SSH_CONNECTION") or "").split()
out["ssh_address"] = ssh_connection[2] if len(ssh_connection) == 4 else None
pid_text = read(os.path.join(prefix, "server.pid"))
server = {"pid": None, "alive": False, "since": None}
if pid_text and pid_text.strip().isdigit():
    pid = int(pid_text.strip())
    server["pid"] = pid
    server["since"] = os.path.getmtime(os.path.join(prefix, "server.pid"))
    cmdline = read("/proc/%d/cmdline" % pid)
    if cmdline is not None:
        server["alive"] = "jupyter" in cmdline
    else:
        try:
            os.kill(pid, 0); server["alive"] = True
        except OSError as e:
            server["alive"] = e.errno == errno.EPERM
out["server"] = server
# Can the wanted address:port be bound? (SO_REUSEADDR like tornado does.)
port_free = None
if args.get("port"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((args.get("ip") or "127.0.0.1", int(args["port"]))); port_free = True
    except OSError:
        port_free = False
    finally:
        s.close()
out["port_free"] = port_free
print(json.dumps(out))
'''

MIN_PYTHON = (3, 9)


@dataclass(frozen=True)
class ServerFacts:
    pid: Optional[int] = None
    alive: bool = False
    since: Optional[float] = None


@dataclass(frozen=True)
class HostFacts:
    python_executable: str
    python_version: tuple[int, int, int]
    python_implementation: str = "CPython"
    user: str = ""
    uid: int = -1
    home: str = ""
    shell: str = "/bin/sh"
    hostname: str = ""
    prefix: str = ""
    prefix_exists: bool = False
    bin_dir: str = ""
    tmux: Optional[str] = None
    uv: Optional[str] = None
    venv_exists: bool = False
    venv_version: Optional[str] = None
    venv_packages: dict[str, str] = field(default_factory=dict)
    rmate_link: Optional[str] = None
    login_path: Optional[str] = None
    profiles: dict[str, bool] = field(default_factory=dict)
    config: Optional[str] = None
    server: ServerFacts = field(default_factory=ServerFacts)
    port_free: Optional[bool] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def python_ok(self) -> bool:
        return self.python_version[:2] >= MIN_PYTHON

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def probe_args(prefix: str, bin_dir: str, port: Optional[int] = None, ip: Optional[str] = None) -> str:
    return json.dumps({"prefix": prefix, "bin_dir": bin_dir, "port": port, "ip": ip})


def parse_facts(stdout: str) -> HostFacts:
    """Parse the probe's JSON (the last line: login scripts may print before it)."""
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise LabhopError(f"the host probe printed no facts: {stdout.strip()[-200:]!r}")
    try:
        raw = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise LabhopError(f"the host probe printed unreadable facts: {exc}") from None
    py = raw["python"]
    version = tuple(py["version"]) + (0,) * (3 - len(py["version"]))
    venv = raw.get("venv", {})
    server = raw.get("server", {})
    known = {"python", "venv", "server", "user", "uid", "home", "shell", "hostname", "prefix",
             "prefix_exists", "bin_dir", "tmux", "uv", "rmate_link", "login_path", "profiles",
             "config", "port_free"}
    return HostFacts(
        python_executable=py["executable"],
        python_version=version[:3],  # type: ignore[arg-type]
        python_implementation=py.get("implementation", "CPython"),
        user=raw.get("user", ""),
        uid=raw.get("uid", -1),
        home=raw.get("home", ""),
        shell=raw.get("shell") or "/bin/sh",
        hostname=raw.get("hostname", ""),
        prefix=raw.get("prefix", ""),
        prefix_exists=raw.get("prefix_exists", False),
        bin_dir=raw.get("bin_dir", ""),
        tmux=raw.get("tmux"),
        uv=raw.get("uv"),
        venv_exists=venv.get("exists", False),
        venv_version=venv.get("version"),
        venv_packages=dict(venv.get("packages", {})),
        rmate_link=raw.get("rmate_link"),
        login_path=raw.get("login_path"),
        profiles=dict(raw.get("profiles", {})),
        config=raw.get("config"),
        server=ServerFacts(pid=server.get("pid"), alive=server.get("alive", False), since=server.get("since")),
        port_free=raw.get("port_free"),
        extra={k: v for k, v in raw.items() if k not in known},
    )
