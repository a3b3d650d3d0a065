"""Facts about this host for labhop: runs on the target's python3 and prints one JSON document.

The controller ships this file on stdin (``python3 - ARGS_JSON``, or after the lock holder,
tasks/remote/lock.py) and parses the output in tasks/target/probe.py. By hand, on a target:

    python3 probe.py ARGS_JSON

where ARGS_JSON is what ``python3 -m labhop.target.probe [PREFIX [BIN_DIR]]`` prints on the controller.
It holds the prefix and bin_dir as the inventory says them (``~`` expanded here, against this host's
HOME), the port/ip to check, and every path and marker below the prefix by name
(tasks/target/layout.py), so that no path is spelled twice.

Standard library only. Written for old interpreters too (no f-strings, no annotations): a python3
older than labhop supports still reports its version, and the controller says so in one line.

To add a fact: write a function below, call it in ``gather``, parse it in tasks/target/probe.py
``facts_from`` (a HostFacts field), and add a case to tests/unit/probe_cases/.
"""
import json
import os
import sys


def main(argv):
    out = {"python": interpreter()}
    if sys.version_info < (3, 6):
        print(json.dumps(out))  # too old for the rest; its version is all the controller needs
        return
    out.update(gather(Target(json.loads(argv[1]))))
    print(json.dumps(out))


def gather(t):
    """Every fact but the interpreter's, by key (the keys tasks/target/probe.py ``facts_from`` reads)."""
    out = identity(t)
    out["uv"] = uv(t)
    out["venv"] = venv(t)
    out["room"] = room(t)
    out["signature"] = signature()
    out["wheelhouse"] = wheelhouse(t)
    out["index"] = index(t, out["venv"])
    out.update(rmate_link(t))
    out["login_path"] = login_path(out["shell"])
    out["profiles"] = profiles(t)
    out["config"] = read(t.path("config_file"))
    out["tls"] = tls(t)
    out["ssh_address"] = ssh_address()
    out["server"] = server(t)
    out["port_free"] = port_free(t.args.get("ip"), t.args.get("port"))
    out["kernels"] = kernels(t)
    out["free_port"] = free_port(t, out["config"])
    out["root_dir_exists"] = os.path.isdir(t.expand(t.args["root_dir"])) if t.args.get("root_dir") else None
    out["notebook_app_files"] = notebook_app_files(t)
    return out


class Target(object):
    """The probe's arguments, with the prefix and bin_dir expanded against this host's HOME."""

    def __init__(self, args):
        self.args = args
        self.home = os.path.expanduser("~")
        self.prefix = self.expand(args["prefix"])
        self.bin_dir = self.expand(args["bin_dir"])

    def expand(self, path):
        if path == "~":
            return self.home
        if path.startswith("~/"):
            return os.path.join(self.home, path[2:])
        return path

    def path(self, name):
        """A path below the prefix, by its name in tasks/target/layout.py ``PATHS``."""
        return os.path.join(self.prefix, self.args["paths"][name])


def read(path, limit=1 << 20):
    try:
        with open(path) as f:
            return f.read(limit)
    except (IOError, OSError):
        return None


def implementation():
    """platform.python_implementation() without importing platform where it can (start-up time)."""
    name = getattr(getattr(sys, "implementation", None), "name", None)
    known = {"cpython": "CPython", "pypy": "PyPy"}
    return known[name] if name in known else __import__("platform").python_implementation()


def interpreter():
    return {"executable": sys.executable, "version": list(sys.version_info[:3]), "implementation": implementation()}


def identity(t):
    import pwd
    import shutil
    import socket
    pw = pwd.getpwuid(os.getuid())
    return {"user": pw.pw_name, "uid": os.getuid(), "home": t.home,
            "shell": os.environ.get("SHELL") or pw.pw_shell, "hostname": socket.gethostname(),
            "prefix": t.prefix, "prefix_exists": os.path.isdir(t.prefix), "bin_dir": t.bin_dir,
            "tmux": shutil.which("tmux"),
            # labhop submitted a Slurm job from here once (serve --slurm): status/stop/logs/tunnel ask squeue
            "slurm_job": os.path.isfile(t.path("slurm_job"))}


def uv(t):
    """labhop's own copy (unpacked from a wheelhouse) first, then the one on PATH."""
    import shutil
    own = t.path("own_uv")
    return own if os.access(own, os.X_OK) else shutil.which("uv")


def venv(t):
    """The virtual environment: its interpreter version, installed distributions, completion marks."""
    import glob
    cfg = read(t.path("venv_cfg")) or ""
    version = None
    for line in cfg.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            version = value.strip()
    packages = {}
    site = os.path.join(t.path("venv"), "lib", "python*", "site-packages")
    for info in glob.glob(os.path.join(site, "*.dist-info")) + glob.glob(os.path.join(site, "*.egg-info")):
        base, ext = os.path.splitext(os.path.basename(info))
        if ext == ".dist-info" and not os.path.exists(os.path.join(info, "RECORD")):
            continue  # RECORD is written last: an install killed half-way left this one
        name, _, rest = base.partition("-")
        packages[name.lower().replace("_", "-")] = rest.split("-")[0]  # egg-info: "1.0.3-py3.11"
    # The venv and install steps write their mark last (tasks/plan.py): a run killed half-way
    # leaves none, and the next run redoes that step.
    return {"exists": os.path.isfile(t.path("venv_python")), "version": version, "packages": packages,
            "complete": os.path.exists(t.path("venv_mark")), "installed": read(t.path("install_mark"))}


def room(t):
    """Room to write: the prefix, or its nearest existing parent when a first run is to create it.
    access() also says EROFS for a read-only mount, which no mode bit (and not root) gets past."""
    directory = t.prefix
    while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)
    try:
        fs = os.statvfs(directory)
    except OSError:
        return None
    return {"dir": directory, "writable": os.access(directory, os.W_OK), "free": fs.f_bavail * fs.f_frsize}


def signature():
    """Which binary wheels this python installs (offline wheelhouses, tasks/offline/signature.py)."""
    import glob
    import subprocess
    import sysconfig
    libc = None
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):
        pass
    if not libc and sys.platform.startswith("linux"):
        for loader in glob.glob("/lib/ld-musl-*.so.1"):  # musl's loader prints "Version 1.2.4"
            try:
                err = subprocess.Popen([loader], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE).communicate(timeout=5)[1]
                for line in err.decode("ascii", "replace").splitlines():
                    if line.startswith("Version "):
                        libc = "musl " + line.split()[1]
            except Exception:
                pass
    return {"version": list(sys.version_info[:3]), "implementation": implementation(),
            "soabi": sysconfig.get_config_var("SOABI"), "abiflags": getattr(sys, "abiflags", ""),
            "system": sys.platform, "machine": os.uname()[4], "bits": 64 if sys.maxsize > 2 ** 32 else 32,
            "libc": libc, "mac": __import__("platform").mac_ver()[0] if sys.platform == "darwin" else None}


def wheelhouse(t):
    """The wheelhouse the controller pushed: name -> size (".part": still arriving or unverified)."""
    directory = t.path("wheelhouse")
    found = {}
    for name in (os.listdir(directory) if os.path.isdir(directory) else []):
        try:
            found[name] = os.path.getsize(os.path.join(directory, name))
        except OSError:
            pass
    return found


def index(t, venv_facts):
    """Can pip reach its index? Only asked when an install is due: short timeouts, never a hang."""
    installed = (venv_facts["exists"] and venv_facts["version"] == ".".join(map(str, sys.version_info[:3]))
                 and os.path.exists(t.path("install_mark"))
                 and all(p in venv_facts["packages"] for p in t.args.get("packages") or []))
    return check_index(t.home, 1.5) if t.args.get("index") and not installed else None


def index_url(home):
    """The index pip would use, and what named it: its variables, then pip.conf files as pip reads them."""
    for var in ("PIP_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX_URL"):
        if os.environ.get(var):
            return os.environ[var].split()[0], var
    import configparser
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    dirs = (os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":")
    files = [os.path.join(d, "pip", "pip.conf") for d in dirs]
    files += ["/etc/pip.conf", os.path.join(home, ".pip", "pip.conf"), os.path.join(xdg, "pip", "pip.conf")]
    files += [os.environ["PIP_CONFIG_FILE"]] if os.environ.get("PIP_CONFIG_FILE") else []
    found = ("https://pypi.org/simple", "default")
    for section in ("global", "install"):  # as pip reads them: [install] over [global], later files win
        for path in files:
            cp = configparser.RawConfigParser()
            try:
                cp.read(path)
                if cp.has_option(section, "index-url"):
                    found = (cp.get(section, "index-url").split()[0], path)
            except Exception:
                pass
    return found


def check_index(home, timeout):
    import socket
    import threading
    import time
    try:
        from urllib.parse import urlsplit
        from urllib.request import getproxies, proxy_bypass_environment  # type: ignore[attr-defined]
    except ImportError:
        return None
    url, source = index_url(home)
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
        try:
            found.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except Exception as e:
            failed.append(str(e))

    resolver = threading.Thread(target=resolve)
    resolver.daemon = True  # a resolver stuck on an unreachable DNS server must not hold the probe
    resolver.start()
    resolver.join(timeout)
    if not found:
        result["error"] = (("cannot resolve %s: %s" % (host, failed[0])) if failed else
                           "cannot resolve %s within %.1fs" % (host, timeout))
    else:
        try:
            family, kind, proto, _, address = found[0][0]
            s = socket.socket(family, kind, proto)
            s.settimeout(timeout)
            try:
                s.connect(address)
                result["reachable"] = True
            finally:
                s.close()
        except (OSError, socket.error) as e:
            result["error"] = "cannot connect to %s:%s: %s" % (
                host, port, getattr(e, "strerror", None) or e or "timed out")
    result["seconds"] = round(time.time() - started, 3)
    return result


def rmate_link(t):
    """bin_dir/rmate: where it points, and whether it is labhop's (a link into this or another
    labhop prefix: PREFIX/venv/bin/rmate next to PREFIX/lock)."""
    link = os.path.join(t.bin_dir, t.args["rmate_link"])
    target = os.readlink(link) if os.path.islink(link) else (link if os.path.exists(link) else None)
    inside = "/" + t.args["paths"]["venv_rmate"]
    owner = (target or "")[:-len(inside)]
    labhop = bool(target is not None and os.path.islink(link) and target.endswith(inside)
                  and os.path.exists(os.path.join(owner, t.args["paths"]["lock_file"])))
    return {"rmate_link": target, "rmate_link_labhop": labhop,
            "rmate_link_dangling": os.path.islink(link) and not os.path.exists(link)}  # its target is gone


def login_path(shell):
    """The PATH a login shell of the user's sees (is bin_dir on it?)."""
    import subprocess
    try:
        with open(os.devnull) as null_in, open(os.devnull, "w") as null_out:
            return subprocess.check_output([shell, "-lc", 'printf %s "$PATH"'], stdin=null_in,
                                           stderr=null_out, timeout=10).decode()
    except Exception:
        return None


def profiles(t):
    """Each login profile that exists -> whether one of labhop's blocks in it puts bin_dir on PATH."""
    begin, end = t.args["profile_markers"]
    found = {}
    for name in t.args["profiles"]:
        text = read(os.path.join(t.home, name))
        if text is not None:
            blocks = [b.split(end)[0] for b in text.split(begin)[1:]]
            found[name] = any(t.bin_dir in b for b in blocks)
    return found


def tls(t):
    """The public variant's TLS pair (tasks/certs.py): the certificate is public; of the key only a
    digest travels back, and this host's own ssl module says whether the two belong together."""
    cert, key = t.path("tls_cert"), t.path("tls_key")
    found = {"cert": read(cert), "key_sha256": None, "pair_ok": None}
    try:
        with open(key, "rb") as f:
            found["key_sha256"] = __import__("hashlib").sha256(f.read()).hexdigest()
    except (IOError, OSError):
        pass
    if found["cert"] and found["key_sha256"]:
        try:
            import ssl
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
            found["pair_ok"] = True
        except ImportError:
            pass
        except Exception:
            found["pair_ok"] = False
    return found


def ssh_address():
    """The address SSH reached this host at: one of the names its certificate carries."""
    ssh_connection = (os.environ.get("SSH_CONNECTION") or "").split()
    return ssh_connection[2] if len(ssh_connection) == 4 else None


def server(t):
    """The server labhop started: its pid file, and whether that process is alive (and jupyter)."""
    import errno
    pid_file = t.path("pid_file")
    text = read(pid_file)
    pid, alive, since = None, False, None
    if text and text.strip().isdigit():
        pid = int(text.strip())
        since = os.path.getmtime(pid_file)
        cmdline = read("/proc/%d/cmdline" % pid)
        if cmdline is not None:
            alive = "jupyter" in cmdline
        else:
            try:
                os.kill(pid, 0)
                alive = True
            except OSError as e:
                alive = e.errno == errno.EPERM
    return {"pid": pid, "alive": alive, "since": since, "kernels": kernels_of(pid) if alive else None}


def kernels_of(pid):
    """The server's running kernels: its children started with a kernel-*.json connection file."""
    def is_kernel(argv):
        return any(os.path.basename(a).startswith("kernel-") and a.endswith(".json") for a in argv)
    if os.path.isdir("/proc"):
        found = 0
        for name in os.listdir("/proc"):
            stat = read("/proc/%s/stat" % name, 4096) if name.isdigit() else None
            fields = (stat or "").rsplit(")", 1)[-1].split()
            if len(fields) > 1 and fields[1] == str(pid):
                found += is_kernel((read("/proc/%s/cmdline" % name) or "").split("\0"))
        return found
    import subprocess  # no /proc (macOS): ps
    try:
        with open(os.devnull, "w") as null:
            listed = subprocess.check_output(["ps", "-A", "-o", "ppid=,args="], stderr=null).decode()
    except Exception:
        return None
    return sum(1 for line in listed.splitlines()
               if line.split(None, 1)[:1] == [str(pid)] and is_kernel(line.split()[1:]))


def free_port(t, config):
    """No port named (``scan``): the first free one from the port in the server's config (the one an
    earlier run picked), else from the default, up."""
    scan = t.args.get("scan")
    if not scan or t.args.get("port"):
        return None
    start = scan["from"]
    for line in (config or "").splitlines():
        value = line[len(scan["setting"]):].strip()
        if line.startswith(scan["setting"]) and value.isdigit():
            start = int(value)
    for candidate in range(start, min(start + scan["count"], 65536)):
        if port_free(t.args.get("ip"), candidate):
            return candidate
    return None


def notebook_app_files(t):
    """Config files on the server's config path (labhop's own dir aside) with old NotebookApp settings of
    the keys labhop's config sets: notebook_shim would let them beat labhop's, so only then does labhop
    repeat its values under NotebookApp. (jupyterlab's own NotebookApp nbserver_extensions is harmless.)"""
    import re
    import site
    keys = t.args.get("notebook_app_keys") or []
    if not keys:
        return []
    pattern = re.compile(r"NotebookApp\.(%s)\b" % "|".join(keys))

    def sets_keys(path):
        text = read(path) or ""
        if "NotebookApp" not in text:
            return False
        if path.endswith(".py"):
            return bool(pattern.search(text))
        try:
            return bool(set(json.loads(text).get("NotebookApp") or {}) & set(keys))
        except Exception:
            return True  # unreadable: assume the worst
    found = []
    for d in [os.path.join(site.getuserbase(), "etc", "jupyter"), os.path.join(t.path("venv"), "etc", "jupyter"),
              "/usr/local/etc/jupyter", "/etc/jupyter"]:
        try:
            names = [os.path.join(d, n) for n in sorted(os.listdir(d))] if os.path.isdir(d) else []
        except OSError:
            found.append(d)  # unreadable: assume the worst
            continue
        for path in list(names):
            if path.endswith(".d") and os.path.isdir(path):
                try:
                    names += [os.path.join(path, n) for n in sorted(os.listdir(path))]
                except OSError:
                    found.append(path)
        found += [p for p in names if p.endswith((".py", ".json")) and sets_keys(p)]
    return found


def port_free(ip, port):
    """Can ip:port be bound? (SO_REUSEADDR like tornado does.) None: not asked."""
    if not port:
        return None
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((ip or "127.0.0.1", int(port)))
        return True
    except OSError:
        return False
    finally:
        s.close()


# -- kernels: the user's environments, read from their files (cheap: this is on every run's path); an
# interpreter runs only for a bare one named by the user (/usr/bin/python3.12), conda only when on PATH.

CONDA_REGISTRY = os.path.join(".conda", "environments.txt")
# For a bare interpreter: where it lives, its version, whether it imports ipykernel.
INTERPRETER_QUERY = (
    "import json, sys\n"
    "try:\n"
    "    from importlib.util import find_spec\n"
    "    has = find_spec('ipykernel') is not None\n"
    "except ImportError:\n"
    "    import imp\n"
    "    try: imp.find_module('ipykernel'); has = True\n"
    "    except ImportError: has = False\n"
    "print(json.dumps([sys.prefix, list(sys.version_info[:3]), has]))\n"
)


def parse_conda_json(text):
    """``conda env list --json`` -> the environment paths it lists, in its order."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    envs = data.get("envs") if isinstance(data, dict) else None
    if not isinstance(envs, list):
        return None
    return [e for e in envs if isinstance(e, str) and e]


def parse_conda_registry(text):
    """conda's ``~/.conda/environments.txt``: one path a line; blank lines and # comments skipped."""
    paths = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and line not in paths:
            paths.append(line)
    return paths


def conda_paths(home, which):
    """Conda's environments: conda itself when it is on the PATH, else its registry file.
    Returns (paths, source); paths that no longer exist are dropped (conda leaves them listed)."""
    import subprocess
    conda = os.environ.get("CONDA_EXE") or which("conda")
    paths, source = None, None
    if conda:
        try:
            proc = subprocess.Popen([conda, "env", "list", "--json"], stdin=open(os.devnull),
                                    stdout=subprocess.PIPE, stderr=open(os.devnull, "w"))
            out = proc.communicate(timeout=30)[0]
            if proc.returncode == 0:
                paths, source = parse_conda_json(out.decode("utf-8", "replace")), conda + " env list --json"
        except Exception:
            paths = None
    if paths is None:
        registry = os.path.join(home, CONDA_REGISTRY)
        try:
            with open(registry) as f:
                paths, source = parse_conda_registry(f.read()), registry
        except (IOError, OSError):
            return [], None
    return [p for p in paths if os.path.isdir(p)], source


def expand_home(path, home):
    if path == "~":
        return home
    if path.startswith("~/"):
        return os.path.join(home, path[2:])
    return path


def env_version(prefix):
    """The Python version of an environment directory, from its files (no interpreter run)."""
    import glob
    try:
        with open(os.path.join(prefix, "pyvenv.cfg")) as f:
            for line in f:
                key, _, value = line.partition("=")
                if key.strip() in ("version", "version_info"):
                    return [int(p) for p in value.strip().split(".")[:3] if p.isdigit()]
    except (IOError, OSError):
        pass
    found = []
    for lib in glob.glob(os.path.join(prefix, "lib", "python[23].*")):
        parts = os.path.basename(lib)[len("python"):].split(".")
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit() and os.path.isdir(lib):
            found.append([int(parts[0]), int(parts[1])])
    return max(found) if found else None


def ipykernel_version(prefix):
    """ipykernel's version in an environment ("" when only conda's record says it is there), or None."""
    import glob
    for info in glob.glob(os.path.join(prefix, "lib", "python*", "site-packages", "ipykernel-*.dist-info")):
        if os.path.exists(os.path.join(info, "RECORD")):  # written last: a cut install leaves none
            return os.path.basename(info)[len("ipykernel-"):-len(".dist-info")]
    return "" if glob.glob(os.path.join(prefix, "conda-meta", "ipykernel-*.json")) else None


def describe_env(given, home, source):
    """One environment (a directory) or interpreter (a file), as the controller plans with it."""
    import glob
    import subprocess
    path = os.path.normpath(expand_home(given, home))
    env = {"given": given, "source": source, "path": path, "prefix": None, "python": None, "kind": None,
           "version": None, "ipykernel": None, "error": None}
    if os.path.isfile(path):
        # .../bin/python of a venv or conda env stands for that environment.
        parent = os.path.dirname(os.path.dirname(path))
        is_env = os.path.isfile(os.path.join(parent, "pyvenv.cfg")) or os.path.isdir(os.path.join(parent, "conda-meta"))
        if os.path.basename(os.path.dirname(path)) == "bin" and is_env:
            path = env["path"] = parent
        else:
            if not os.access(path, os.X_OK):
                env["error"] = "is not an executable interpreter"
                return env
            env.update(kind="python", python=path)
            try:
                proc = subprocess.Popen([path, "-c", INTERPRETER_QUERY], stdin=open(os.devnull),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                out, err = proc.communicate(timeout=30)
                prefix, version, ipykernel = json.loads(out.decode("utf-8", "replace").strip().splitlines()[-1])
                env.update(prefix=prefix, version=version, ipykernel="" if ipykernel else None)
            except Exception:
                env["error"] = "does not run as a Python interpreter"
            return env
    if not os.path.isdir(path):
        env["error"] = "no such environment (neither a directory nor an interpreter)"
        return env
    env["prefix"] = path
    env["kind"] = "conda" if os.path.isdir(os.path.join(path, "conda-meta")) else "venv"
    for name in ("python", "python3"):
        candidate = os.path.join(path, "bin", name)
        if os.access(candidate, os.X_OK):
            env["python"] = candidate
            break
    if env["python"] is None:
        env["error"] = "has no bin/python"
        return env
    env["version"] = env_version(path)
    env["ipykernel"] = ipykernel_version(path)
    env["pip"] = bool(glob.glob(os.path.join(path, "lib", "python*", "site-packages", "pip")))
    # conda's base environment (the installation itself) has condabin/ next to its envs/.
    env["base"] = env["kind"] == "conda" and os.path.isdir(os.path.join(path, "condabin"))
    return env


def registered_kernels(directory):
    """labhop's kernelspecs: name -> kernel.json text (None when unreadable)."""
    specs = {}  # type: dict[str, str | None]
    try:
        names = os.listdir(directory)
    except OSError:
        return specs
    for name in names:
        try:
            with open(os.path.join(directory, name, "kernel.json")) as f:
                specs[name] = f.read(1 << 16)
        except (IOError, OSError):
            specs[name] = None
    return specs


def kernels(t):
    """The user's environments (tasks/kernels.py makes kernels of them) and labhop's kernelspecs.
    ``kernels`` in the arguments: {"named": [paths], "conda": bool}, or None: only what is registered."""
    import shutil
    request, home, which = t.args.get("kernels"), t.home, shutil.which
    out = {"registered": registered_kernels(t.path("kernels_dir")), "envs": None, "conda_source": None}
    if request is None:
        return out
    envs, seen = [], set()
    for given in request.get("named") or []:
        env = describe_env(given, home, "named")
        envs.append(env)
        seen.add(env["prefix"] or env["path"])
    if request.get("conda", True):
        paths, out["conda_source"] = conda_paths(home, which)
        for path in paths:
            if os.path.normpath(path) not in seen:
                seen.add(os.path.normpath(path))
                envs.append(describe_env(path, home, "conda"))
    out["envs"] = envs
    return out


if __name__ == "__main__":
    main(sys.argv)
