"""Bad input against a real sshd: one clear line on stderr, the right exit code, no traceback,
nothing half-written on the target.

Each case gets its own inventory host with its own prefix; after a failing run that prefix
must not exist (labhop refuses before writing, and a first run that wrote nothing leaves no
trace). Exit codes: 2 for usage errors (what the user typed), 1 for failures (the world).
"""
from __future__ import annotations

import contextlib
import re
import shlex
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from tests.support import FabResult, Workspace, free_port, http_status, need, ssh

pytestmark = pytest.mark.integration


@dataclass
class Lab:
    ws: Workspace
    server: object  # tests.harness.sshd.SshServer
    root: Path
    python3: str  # the target's own python3 (asked over ssh)
    shared_prefix: str  # provisioned once, for the cases that need a venv
    port: int  # a free Jupyter port for the cases that start one

    def prefix(self, case: str) -> str:
        return str(self.root / "prefixes" / case)

    def host(self, name: str, **keys: object) -> str:
        """An inventory table for the sshd under ``name``, with ``keys`` over the defaults."""
        values: dict[str, object] = {
            "hostname": "127.0.0.1", "ssh_port": self.server.port, "user": self.server.user,
            "identity_file": str(self.server.identity_file), "prefix": self.prefix(name),
            "bin_dir": str(self.root / "bin"), "port": self.port, **keys}
        lines = [f"[hosts.{name}]"] + [f"{k} = {_toml(v)}" for k, v in values.items()]
        return "\n".join(lines) + "\n"

    def serve_shared(self, **keys: object) -> FabResult:
        """Serve from the shared prefix (provisioned by the first call: only two cases need a venv)."""
        self.ws.write_inventory(self.host("shared", prefix=self.shared_prefix, **keys))
        return self.ws.fab("serve", host="shared")

    def on_target(self, command: str, *, timeout: float = 60) -> subprocess.CompletedProcess:
        return ssh(self.ws.ssh_config, "target", command, timeout=timeout)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value) if isinstance(value, int) else '"' + str(value).replace('"', '\\"') + '"'


@pytest.fixture(scope="module")
def lab(sshd_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("bad-input")
    home = root / "home"  # the controller's HOME: no ~/.ssh keys or config of the real user
    (home / ".ssh").mkdir(parents=True)
    known_hosts = root / "known_hosts"
    known_hosts.write_text(sshd_server.known_hosts_line + "\n")
    config = root / "ssh_config"
    config.write_text(sshd_server.ssh_config.read_text() + "\nHost *\n"
                      f"    UserKnownHostsFile {known_hosts}\n    StrictHostKeyChecking yes\n"
                      "    BatchMode yes\n    ConnectTimeout 5\n")
    ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=config, home=home)
    found = ssh(config, "target", "command -v python3")
    assert found.returncode == 0, found.stderr
    lab = Lab(ws=ws, server=sshd_server, root=root, python3=found.stdout.strip(),
              shared_prefix=str(root / "shared-prefix"), port=free_port())
    try:
        yield lab
    finally:
        ws.write_inventory(lab.host("shared", prefix=lab.shared_prefix))
        ws.fab("stop", host="shared")


# -- setups: what a case needs around its run ---------------------------------------------------

Setup = Callable[[Lab, "Case"], contextlib.AbstractContextManager]


@contextlib.contextmanager
def nothing(lab: Lab, case: "Case") -> Iterator[dict[str, str]]:
    yield {}


@contextlib.contextmanager
def listening_on_target_port(lab: Lab, case: "Case") -> Iterator[dict[str, str]]:
    # The sshd "target" is this machine's loopback: a socket here is on the target.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", lab.port))
        holder.listen()
        yield {"port": str(lab.port)}


@contextlib.contextmanager
def serving_and_local_port_taken(lab: Lab, case: "Case") -> Iterator[dict[str, str]]:
    # A tunnel needs a server to point at; the port the user names here is taken.
    lab.serve_shared().ok()
    port = free_port()
    try:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", port))
            holder.listen()
            yield {"local_port": str(port)}
    finally:
        lab.ws.fab("stop", host="shared").ok()


@contextlib.contextmanager
def closed_port(lab: Lab, case: "Case") -> Iterator[dict[str, str]]:
    yield {"closed": str(free_port())}  # nothing listens there


@contextlib.contextmanager
def foreign_key(lab: Lab, case: "Case") -> Iterator[dict[str, str]]:
    key = lab.root / f"key-{case.id}"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    yield {"key": str(key)}


@contextlib.contextmanager
def old_python(lab: Lab, case: "Case") -> Iterator[dict[str, str]]:
    # An interpreter that reports Python 3.7.17 and runs what it is given like any python
    # (the probe and the lock run whatever `python` the inventory names).
    fake = lab.root / "python3.7"
    fake.write_text(f"#!{lab.python3}\n" + '''import sys
sys.version_info = (3, 7, 17, "final", 0)
sys.executable = __file__
args = sys.argv[1:]
while args[0] not in ("-c", "-") and args[0].startswith("-"):
    args.pop(0)  # interpreter options (-S, -I)
if args[0] == "-c":
    code, sys.argv = args[1], ["-c"] + args[2:]
else:
    code, sys.argv = sys.stdin.read(), args
exec(compile(code, "<labhop>", "exec"), {"__name__": "__main__"})
''')
    fake.chmod(0o755)
    yield {"python": str(fake)}


def mounted(options: str, *, fill: bool = False) -> Setup:
    """A tmpfs mounted on the target inside sshd's private mount namespace (invisible here)."""

    @contextlib.contextmanager
    def setup(lab: Lab, case: "Case") -> Iterator[dict[str, str]]:
        need(getattr(lab.server, "home_isolation", "") == "passwd-bind" and lab.server.user == "root",
             "mounting on the target needs root and the harness's private mount namespace")
        point = lab.root / f"mnt-{case.id}"
        point.mkdir(exist_ok=True)
        q = shlex.quote(str(point))
        done = lab.on_target(f"mount -t tmpfs -o {options} labhop-test {q}"
                             + (f" && {{ dd if=/dev/zero of={q}/fill bs=64k 2>/dev/null; true; }}" if fill else ""))
        assert done.returncode == 0, done.stderr
        try:
            yield {"mount": str(point)}
        finally:
            lab.on_target(f"umount {q}")

    return setup


# -- the cases --------------------------------------------------------------------------------

@dataclass
class Case:
    id: str
    args: tuple[str, ...]
    code: int
    message: str  # a regex for what follows "labhop: HOST: ", {placeholders} from the setup
    host_keys: dict[str, object] = field(default_factory=dict)
    setup: Setup = nothing
    inventory: Optional[str] = None  # the whole inventory text instead of the case's host
    extra_hosts: str = ""
    env: dict[str, str] = field(default_factory=dict)
    host: Optional[str] = None  # -H (default: the case's own host)
    label: Optional[str] = None  # the host named in the message (default: -H; "": none, the inventory's own)


CASES = [
    Case("malformed-inventory", ("status",), 2, r"{inventory}:3: malformed TOML: .+",
         inventory="[hosts.malformed-inventory]\nhostname = \"127.0.0.1\"\nport = \n", label=""),
    Case("unknown-inventory-key", ("status",), 2,
         r"{inventory}:\d+: unknown key 'prot' in \[hosts\.unknown-inventory-key\] \(known: .*port.*\)",
         host_keys={"prot": 8888}, label=""),
    Case("inventory-port-out-of-range", ("status",), 2,
         r"{inventory}:\d+: 'port' in \[hosts\.inventory-port-out-of-range\] must be a port number 1-65535, got 0",
         host_keys={"port": 0}, label=""),
    Case("unknown-host", ("status",), 2,
         r"target no-such-host\.invalid \(.*\): cannot resolve host name \(Name or service not known\); "
         r"is it in inventory\.toml or ssh_config\?", host="no-such-host.invalid"),
    Case("dead-jump-host", ("provision",), 1,
         r"jump host 1 of 1 deadjump \(root@127\.0\.0\.1:{closed}\): cannot connect to 127\.0\.0\.1:{closed}: "
         r"Connection refused", setup=closed_port, host_keys={"jump": ["deadjump"]},
         extra_hosts='[hosts.deadjump]\nhostname = "127.0.0.1"\nssh_port = {closed}\n'),
    Case("refused-key", ("provision",), 1,
         r"target refused-key \(root@127\.0\.0\.1:\d+\): SSH authentication failed: .+",
         setup=foreign_key, host_keys={"identity_file": "{key}"}),
    Case("no-python", ("provision",), 1,
         r"no /nonexistent/python3 on the target \(labhop needs Python >= 3\.9 there; "
         r"set `python` in inventory\.toml if it lives elsewhere\)", host_keys={"python": "/nonexistent/python3"}),
    Case("old-python", ("provision",), 1,
         r"{python} is Python 3\.7\.17; labhop needs Python >= 3\.9 on the target",
         setup=old_python, host_keys={"python": "{python}"}),
    Case("busy-target-port", ("serve",), 1,
         r"port {port} on 127\.0\.0\.1 is busy on the target; pick another with --port",
         setup=listening_on_target_port),
    Case("busy-local-port", ("tunnel", "--local-port", "{local_port}"), 1,
         r"--local-port {local_port}: busy on 127\.0\.0\.1 here; pick another, or leave --local-port out "
         r"to take the next free one", setup=serving_and_local_port_taken, host="shared"),
    Case("invalid-port", ("serve", "--port", "70000"), 2, r"--port: port 70000 is out of range 1-65535"),
    Case("port-not-a-number", ("serve", "--port", "http"), 2, r"--port: 'http' is not a port number"),
    Case("public-without-password", ("serve", "--public", "--password-file", "{empty}"), 2,
         r"the password from --password-file {empty} is empty"),
    Case("noninteractive-without-password-source", ("serve", "--public"), 2,
         r"a password is required: use --password-file FILE or set \$LABHOP_PASSWORD \(no terminal to prompt on\)"),
    Case("password-over-72-bytes", ("serve", "--public"), 2,
         r"the password from \$LABHOP_PASSWORD is longer than bcrypt's 72 bytes; choose a shorter one",
         env={"LABHOP_PASSWORD": "é" * 37}),  # 37 characters, 74 bytes
    Case("public-on-loopback", ("serve", "--public", "--ip", "127.0.0.1"), 2,
         r"--public conflicts with --ip 127\.0\.0\.1: --public listens beyond localhost; drop it for the token "
         r"variant on localhost, or give a non-loopback --ip", env={"LABHOP_PASSWORD": "a fine password"}),
    Case("insecure-http-with-certfile", ("serve", "--public", "--insecure-http", "--certfile", "{empty}",
                                         "--keyfile", "{empty}"), 2,
         r"--insecure-http conflicts with --certfile/--keyfile: pick one", env={"LABHOP_PASSWORD": "a fine password"}),
    Case("missing-certfile", ("serve", "--public", "--certfile", "/nonexistent/cert.pem",
                              "--keyfile", "/nonexistent/key.pem"), 2,
         r"--certfile /nonexistent/cert\.pem: No such file or directory", env={"LABHOP_PASSWORD": "a fine password"}),
    Case("read-only-prefix", ("provision",), 1,
         r"cannot create {mount}/labhop: Read-only file system",
         setup=mounted("ro,size=1m"), host_keys={"prefix": "{mount}/labhop"}),
    Case("full-prefix", ("provision",), 1,
         r"only 0 KiB free below {mount}/labhop; a virtual environment with JupyterLab needs about 350 MiB: "
         r"free some space or set `prefix` in the inventory to a roomier place",
         setup=mounted("size=256k", fill=True), host_keys={"prefix": "{mount}/labhop"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line(lab: Lab, case: Case) -> None:
    empty = lab.root / "empty-password"
    empty.write_text("")
    with case.setup(lab, case) as values:
        values = {**values, "empty": str(empty), "inventory": str(lab.ws.inventory)}
        fill = lambda text: text.format(**values)  # noqa: E731
        keys = {k: [fill(x) for x in v] if isinstance(v, list) else fill(v) if isinstance(v, str) else v
                for k, v in case.host_keys.items()}
        text = case.inventory if case.inventory is not None else \
            lab.host(case.id, **keys) + fill(case.extra_hosts) + lab.host("shared", prefix=lab.shared_prefix)
        lab.ws.write_inventory(text)
        host = case.host or case.id
        result = lab.ws.fab(*[fill(a) for a in case.args], host=host, env={"SSH_AUTH_SOCK": "", **case.env},
                            timeout=120)
        prefix = Path(fill(str(keys.get("prefix", lab.prefix(case.id)))))
        assert_one_line(result, case.code, host if case.label is None else case.label,
                        _escape_values(case.message, values))
        assert not prefix.exists(), f"{case.id} left {prefix} behind: {sorted(p.name for p in prefix.iterdir())}"


def _escape_values(pattern: str, values: dict[str, str]) -> str:
    """Fill {placeholders} in a regex with the setup's values, escaped as literals."""
    return re.sub(r"\{(\w+)\}", lambda m: re.escape(values[m.group(1)]), pattern)


def assert_one_line(result: FabResult, code: int, host: str, message: str) -> None:
    assert "Traceback" not in result.output, result.output
    assert result.returncode == code, f"exit {result.returncode}, wanted {code}:\n{result.output}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"wanted one line on stderr, got:\n{result.stderr}"
    where = f"{re.escape(host)}: " if host else ""
    assert re.fullmatch(f"labhop: {where}{message}", lines[0]), lines[0]


# -- not an error: tmux missing falls back to nohup ---------------------------------------------

def test_no_tmux_on_the_target_falls_back_to_nohup(lab: Lab) -> None:
    # A target whose PATH has no tmux: the probe looks it up there with shutil.which.
    wrapper = lab.root / "python3-without-tmux"
    wrapper.write_text(f"#!/bin/sh\nPATH=/nonexistent-labhop-test exec {shlex.quote(lab.python3)} \"$@\"\n")
    wrapper.chmod(0o755)
    try:
        out = lab.serve_shared(python=str(wrapper)).ok()
        assert "start JupyterLab with nohup on 127.0.0.1:" in out.stdout
        assert "(tmux not found)" in out.stdout
        assert "Traceback" not in out.output and "error" not in out.stderr.lower()
        url = out.stdout.strip().splitlines()[-1].split("open: ", 1)[1]
        assert http_status(url.replace("/lab?", "/api/status?")) == 200
        status = lab.ws.fab("status", host="shared").ok().stdout
        assert "running: pid" in status and f"port {lab.port}" in status
        tmux = lab.on_target("tmux ls 2>&1; true").stdout
        assert "labhop-" not in tmux  # no tmux session was involved
    finally:
        lab.ws.fab("stop", host="shared").ok()
    assert "not running" in lab.ws.fab("status", host="shared").ok().stdout
