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

from ..errors import LabhopError
from ..offline.signature import TargetSignature, parse_signature

PROBE_SOURCE = r'''
import json, os, sys
def implementation():  # platform.python_implementation() without importing platform where it can
    name = getattr(getattr(sys, "implementation", None), "name", None)
    known = {"cpython": "CPython", "pypy": "PyPy"}
    return known[name] if name in known else __import__("platform").python_implementation()
out = {"python": {"executable": sys.executable, "version": list(sys.version_info[:3]),
                  "implementation": implementation()}}
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
            "tmux": shutil.which("tmux"),
            "slurm_job": os.path.isfile(os.path.join(prefix, "slurm", "job.json"))})
# uv: labhop's own copy (unpacked from a wheelhouse) first, then the one on PATH.
own_uv = os.path.join(prefix, "bin", "uv")
out["uv"] = own_uv if os.access(own_uv, os.X_OK) else shutil.which("uv")
# Virtual environment: interpreter version and installed distributions.
cfg = read(os.path.join(venv, "pyvenv.cfg")) or ""
venv_version = None
for line in cfg.splitlines():
    key, _, value = line.partition("=")
    if key.strip() in ("version", "version_info"):
        venv_version = value.strip()
packages = {}
site = os.path.join(venv, "lib", "python*", "site-packages")
for info in glob.glob(os.path.join(site, "*.dist-info")) + glob.glob(os.path.join(site, "*.egg-info")):
    base, ext = os.path.splitext(os.path.basename(info))
    if ext == ".dist-info" and not os.path.exists(os.path.join(info, "RECORD")):
        continue  # RECORD is written last: an install killed half-way left this one
    name, _, rest = base.partition("-")
    packages[name.lower().replace("_", "-")] = rest.split("-")[0]  # egg-info: "1.0.3-py3.11"
# Markers the venv and install steps write when they complete (tasks/plan.py): a run
# killed half-way leaves none, and the next run redoes that step.
out["venv"] = {"exists": os.path.isfile(os.path.join(venv, "bin", "python")),
               "version": venv_version, "packages": packages,
               "complete": os.path.exists(os.path.join(venv, ".labhop-venv-complete")),
               "installed": read(os.path.join(venv, ".labhop-installed"))}
# Room to write: the prefix, or its nearest existing parent when a first run is to create it.
# access() also says EROFS for a read-only mount, which no mode bit (and not root) gets past.
room_dir = prefix
while not os.path.isdir(room_dir) and os.path.dirname(room_dir) != room_dir:
    room_dir = os.path.dirname(room_dir)
try:
    fs = os.statvfs(room_dir)
    out["room"] = {"dir": room_dir, "writable": os.access(room_dir, os.W_OK), "free": fs.f_bavail * fs.f_frsize}
except OSError:
    out["room"] = None
# Interpreter signature: which binary wheels this python installs (offline wheelhouses).
import sysconfig
libc = None
try:
    libc = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"
except (AttributeError, ValueError, OSError):
    pass
if not libc and sys.platform.startswith("linux"):
    for loader in glob.glob("/lib/ld-musl-*.so.1"):  # musl's loader prints "Version 1.2.4"
        try:
            err = subprocess.Popen([loader], stdout=subprocess.PIPE, stderr=subprocess.PIPE).communicate(timeout=5)[1]
            for line in err.decode("ascii", "replace").splitlines():
                if line.startswith("Version "): libc = "musl " + line.split()[1]
        except Exception:
            pass
out["signature"] = {"version": list(sys.version_info[:3]), "implementation": implementation(),
                    "soabi": sysconfig.get_config_var("SOABI"), "abiflags": getattr(sys, "abiflags", ""),
                    "system": sys.platform, "machine": os.uname()[4], "bits": 64 if sys.maxsize > 2 ** 32 else 32,
                    "libc": libc, "mac": __import__("platform").mac_ver()[0] if sys.platform == "darwin" else None}
# The wheelhouse pushed by the controller: name -> size (".part" = still arriving or unverified).
wheelhouse = os.path.join(prefix, "wheelhouse"); out["wheelhouse"] = {}
for name in (os.listdir(wheelhouse) if os.path.isdir(wheelhouse) else []):
    try: out["wheelhouse"][name] = os.path.getsize(os.path.join(wheelhouse, name))
    except OSError: pass
# Can pip reach its index? Only asked when an install is due: short timeouts, never a hang.
def index_url():
    for var in ("PIP_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX_URL"):
        if os.environ.get(var): return os.environ[var].split()[0], var
    import configparser
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    files = [os.path.join(d, "pip", "pip.conf") for d in (os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":")]
    files += ["/etc/pip.conf", os.path.join(home, ".pip", "pip.conf"), os.path.join(xdg, "pip", "pip.conf")]
    files += [os.environ["PIP_CONFIG_FILE"]] if os.environ.get("PIP_CONFIG_FILE") else []
    found = ("https://pypi.org/simple", "default")
    for section in ("global", "install"):  # as pip reads them: [install] over [global], later files win
        for path in files:
            cp = configparser.RawConfigParser()
            try:
                cp.read(path)
                if cp.has_option(section, "index-url"): found = (cp.get(section, "index-url").split()[0], path)
            except Exception:
                pass
    return found
def check_index(timeout):
    import threading, time
    try:
        from urllib.parse import urlsplit
        from urllib.request import getproxies, proxy_bypass_environment
    except ImportError:
        return None
    url, source = index_url()
    parts = urlsplit(url)
    netloc = (parts.hostname or "") + (":%d" % parts.port if parts.port else "")
    shown = parts._replace(netloc=netloc).geturl() if "@" in parts.netloc else url  # never show credentials
    result = {"url": shown, "source": source, "reachable": False, "error": None}
    started = time.time()
    if parts.scheme == "file":
        result["reachable"] = os.path.isdir(parts.path)
        result["error"] = None if result["reachable"] else "no such directory"
        return result
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = getproxies().get(parts.scheme)
    if proxy and not proxy_bypass_environment(host or ""):
        proxy_parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        host, port = proxy_parts.hostname, proxy_parts.port or 8080
        result["via"] = "%s:%s" % (host, port)
    found, failed = [], []
    def resolve():
        try: found.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except Exception as e: failed.append(str(e))
    resolver = threading.Thread(target=resolve)
    resolver.daemon = True  # a resolver stuck on an unreachable DNS server must not hold the probe
    resolver.start(); resolver.join(timeout)
    if not found:
        result["error"] = ("cannot resolve %s: %s" % (host, failed[0])) if failed else \
            "cannot resolve %s within %.1fs" % (host, timeout)
    else:
        try:
            family, kind, proto, _, address = found[0][0]
            s = socket.socket(family, kind, proto); s.settimeout(timeout)
            try: s.connect(address); result["reachable"] = True
            finally: s.close()
        except (OSError, socket.error) as e:
            why = getattr(e, "strerror", None) or e or "timed out"
            result["error"] = "cannot connect to %s:%s: %s" % (host, port, why)
    result["seconds"] = round(time.time() - started, 3)
    return result
installed = out["venv"]["exists"] and venv_version == ".".join(map(str, sys.version_info[:3])) and \
    os.path.exists(os.path.join(venv, ".labhop-installed")) and all(p in packages for p in args.get("packages") or [])
out["index"] = check_index(1.5) if args.get("index") and not installed else None
link = os.path.join(bin_dir, "rmate")
out["rmate_link"] = os.readlink(link) if os.path.islink(link) else (link if os.path.exists(link) else None)
# A link into another labhop prefix (PREFIX/venv/bin/rmate next to PREFIX/lock) is labhop's too.
owner = os.path.dirname(os.path.dirname(os.path.dirname(out["rmate_link"] or "")))
out["rmate_link_labhop"] = bool(os.path.islink(link) and out["rmate_link"].endswith("/venv/bin/rmate")
                                and os.path.exists(os.path.join(owner, "lock")))
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
        # True when one of labhop's blocks in it already puts this bin_dir on PATH.
        blocks = [b.split("# <<< labhop <<<")[0] for b in text.split("# >>> labhop >>>")[1:]]
        out["profiles"][name] = any(bin_dir in b for b in blocks)
# Jupyter config and server.
out["config"] = read(os.path.join(prefix, "jupyter", "jupyter_server_config.py"))
# The public variant's TLS pair (tasks/certs.py): the certificate is public; of the key only a
# digest travels back, and the target's own ssl module says whether the two belong together.
tls_cert = os.path.join(prefix, "tls", "cert.pem"); tls_key = os.path.join(prefix, "tls", "key.pem")
tls = {"cert": read(tls_cert), "key_sha256": None, "pair_ok": None}
try:
    with open(tls_key, "rb") as f: tls["key_sha256"] = __import__("hashlib").sha256(f.read()).hexdigest()
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
class IndexCheck:
    """Could the target reach its package index (PIP_INDEX_URL / pip.conf / PyPI)? URL without credentials."""
    url: str
    source: str  # the variable or file that named it, or "default"
    reachable: bool
    error: Optional[str] = None


@dataclass(frozen=True)
class Room:
    """The directory labhop writes into first (the prefix or its nearest existing parent)."""

    dir: str
    writable: bool
    free: int  # bytes available to the target user


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
    # labhop submitted a Slurm job from here once (serve --slurm): status/stop/logs/tunnel ask squeue
    slurm_job: bool = False
    bin_dir: str = ""
    tmux: Optional[str] = None
    uv: Optional[str] = None
    venv_exists: bool = False
    venv_version: Optional[str] = None
    venv_packages: dict[str, str] = field(default_factory=dict)
    venv_complete: bool = False  # its creation finished (marker), see tasks/plan.py venv_ok
    venv_installed: Optional[str] = None  # the requirements the last complete install step installed
    room: Optional[Room] = None  # can labhop write below the prefix, and how much
    rmate_link: Optional[str] = None
    rmate_link_labhop: bool = False
    login_path: Optional[str] = None
    profiles: dict[str, bool] = field(default_factory=dict)
    config: Optional[str] = None
    server: ServerFacts = field(default_factory=ServerFacts)
    port_free: Optional[bool] = None
    signature: Optional[TargetSignature] = None
    index: Optional[IndexCheck] = None  # None: not checked (not asked, or nothing to install)
    wheelhouse: dict[str, int] = field(default_factory=dict)  # <prefix>/wheelhouse: name -> size
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def python_ok(self) -> bool:
        return self.python_version[:2] >= MIN_PYTHON

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def probe_args(prefix: str, bin_dir: str, port: Optional[int] = None, ip: Optional[str] = None,
               *, index: bool = False, packages: tuple[str, ...] = ()) -> str:
    """``index``: check the package index when ``packages`` are not all installed in the venv."""
    return json.dumps({"prefix": prefix, "bin_dir": bin_dir, "port": port, "ip": ip,
                       "index": index, "packages": list(packages)})


def parse_facts(stdout: str) -> HostFacts:
    """Parse the probe's JSON (the last line: login scripts may print before it)."""
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise LabhopError(f"the host probe printed no facts: {stdout.strip()[-200:]!r}")
    try:
        raw = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise LabhopError(f"the host probe printed unreadable facts: {exc}") from None
    return facts_from(raw)


def facts_from(raw: dict[str, Any]) -> HostFacts:
    """``HostFacts`` from the probe's JSON document, already decoded."""
    py = raw["python"]
    version = tuple(py["version"]) + (0,) * (3 - len(py["version"]))
    venv = raw.get("venv", {})
    server = raw.get("server", {})
    known = {"python", "venv", "server", "user", "uid", "home", "shell", "hostname", "prefix",
             "prefix_exists", "bin_dir", "tmux", "uv", "rmate_link", "rmate_link_labhop", "login_path", "profiles",
             "config", "port_free", "slurm_job", "signature", "index", "wheelhouse", "room"}
    index = raw.get("index")
    return HostFacts(
        python_executable=py["executable"],
        python_version=version[:3],
        python_implementation=py.get("implementation", "CPython"),
        user=raw.get("user", ""),
        uid=raw.get("uid", -1),
        home=raw.get("home", ""),
        shell=raw.get("shell") or "/bin/sh",
        hostname=raw.get("hostname", ""),
        prefix=raw.get("prefix", ""),
        prefix_exists=raw.get("prefix_exists", False),
        slurm_job=bool(raw.get("slurm_job", False)),
        bin_dir=raw.get("bin_dir", ""),
        tmux=raw.get("tmux"),
        uv=raw.get("uv"),
        venv_exists=venv.get("exists", False),
        venv_version=venv.get("version"),
        venv_packages=dict(venv.get("packages", {})),
        venv_complete=bool(venv.get("complete", False)),
        venv_installed=venv.get("installed"),
        room=Room(**raw["room"]) if raw.get("room") else None,
        rmate_link=raw.get("rmate_link"),
        rmate_link_labhop=bool(raw.get("rmate_link_labhop", False)),
        login_path=raw.get("login_path"),
        profiles=dict(raw.get("profiles", {})),
        config=raw.get("config"),
        server=ServerFacts(pid=server.get("pid"), alive=server.get("alive", False), since=server.get("since")),
        port_free=raw.get("port_free"),
        signature=parse_signature(raw.get("signature")),
        index=IndexCheck(url=index.get("url", ""), source=index.get("source", ""),
                         reachable=bool(index.get("reachable")), error=index.get("error")) if index else None,
        wheelhouse={str(k): int(v) for k, v in (raw.get("wheelhouse") or {}).items()},
        extra={k: v for k, v in raw.items() if k not in known},
    )
