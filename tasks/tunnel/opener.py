"""Opening a forward: reuse a working one, else start ``ssh`` (or, without it, paramiko), verify
the forward end to end, record it, and hold it in the foreground or leave it to its supervisor.

``fab tunnel`` forwards a local port to JupyterLab on the target; ``fab rmate`` forwards a
port on the target back to the editor here; ``tunnel --rmate`` does both in one ``ssh``.
The ``ssh`` argv comes from tasks/ssh/openssh.py (same hops as Fabric). Each forward is verified
before it is reported: the local port listens, the server answers with the token through
it, the target's end of the reverse forward listens. Otherwise the failing hop or step
is named in one line and nothing is left running.
"""
from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from .. import shell
from ..errors import LabhopError, UsageError
from ..executor import apply as apply_steps
from ..executor import run as run_on_target
from ..remote import source
from ..ssh.connect import close_chain
from ..target.layout import Layout
from ..ssh.openssh import (Chain, Forwards, LocalForward, LocalPortBusy, RemoteForward, SshFailure, bracket,
                           diagnose, explain_failure, forward_failure, forward_options, tunnel_argv)
from . import rmate as rmate_mod
from . import hold, supervise
from .endpoint import JupyterEnd, check_http, connect_host
from .local import port_is_free
from .process import end_process, start_time
from .records import RMATE, TUNNEL, Record, is_alive, log_path, read_records, remove_record, state_path, write_record
from ..invocation import PROGRAM

READY_TIMEOUT = 30.0  # for the whole chain to connect and the forward to listen
PORT_TRIES = 100  # how far past a busy local port to look for a free one


@dataclass(frozen=True)
class Request:
    jupyter: bool = True
    rmate: bool = False
    local_port: Optional[int] = None
    bind: str = "127.0.0.1"
    editor_port: int = rmate_mod.DEFAULT_PORT
    background: bool = False


def choose_local_port(wanted: int, is_free: Callable[[int], bool], *, tries: int = PORT_TRIES) -> int:
    """``wanted`` if free, else the next free port above it."""
    for port in range(wanted, min(wanted + tries, 65536)):
        if is_free(port):
            return port
    raise LabhopError(f"no free local port in {wanted}-{min(wanted + tries, 65536) - 1}: pick one with --local-port")


class Closed(Exception):
    """SIGTERM/SIGHUP while a foreground forward runs: close it like Ctrl-C."""


@contextlib.contextmanager
def _terminate_is_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise Closed(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def ssh_binary() -> Optional[str]:
    return shutil.which("ssh")


def log_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


class Opener:
    """Opens, verifies, records and (in the foreground) holds the forwards for one target."""

    def __init__(self, session: Any, chain: Chain, request: Request, jupyter: Optional[JupyterEnd]) -> None:
        self.s = session
        self.host = session.target.name
        self.chain = chain
        self.req = request
        self.end = jupyter
        self.say = session.report.say
        self.kind = TUNNEL if request.jupyter else RMATE

    # ---- reuse what is already open
    def reuse_existing(self) -> bool:
        """A live forward of this kind to this host: keep it when it still works (idempotent re-run)."""
        for record in read_records(self.host):
            if record.kind != self.kind:
                continue
            if not is_alive(record):
                remove_record(record)
                continue
            same = self._same(record)
            works = True
            if same and self.end is not None and record.local_port:
                status, _ = check_http(self.end, connect_host(record.bind or "127.0.0.1"), record.local_port,
                                       timeout=5)
                works = status == 200
            if same and works:
                self.say(f"already open: {record.describe()}")
                if self.end is not None and record.local_port:
                    self.say(f"open: {self.end.url(connect_host(record.bind or '127.0.0.1'), record.local_port)}")
                self.say(f"`{PROGRAM} -H {self.host} {self.kind} --close` ends it")
                return True
            why = "it no longer answers" if same else "it forwards something else"
            end_process(record.pid)
            remove_record(record)
            self.say(f"closed the earlier {self.kind} (pid {record.pid}): {why}")
        return False

    def _same(self, record: Record) -> bool:
        """Does the open forward give what this request asks for?"""
        if self.req.rmate != bool(record.rmate_port):
            return False
        if self.req.rmate and record.editor_port != self.req.editor_port:
            return False
        if not self.req.jupyter:
            return True
        return (self.end is not None and record.remote_port == self.end.port and record.bind == self.req.bind
                and self.req.local_port in (None, record.local_port))

    # ---- the rmate end on the target
    def rmate_port_on_target(self) -> int:
        settings = self.s.settings
        endpoint = Layout(settings.prefix).path("slurm_endpoint")  # a Slurm job's server (serve --slurm)
        command = f"{shell.q(settings.python)} - {int(rmate_mod.DEFAULT_PORT)} {shell.q(endpoint)}"
        result = run_on_target(self.s.c, command, stdin=source("rmate_ports.py"),
                               what="check rmate's port on the target")
        ports = rmate_mod.parse_ports(result.stdout)
        note = rmate_mod.slurm_note(ports, self.host)
        if note:
            self.say(note)
        port = rmate_mod.choose_remote_port(ports)
        if port != rmate_mod.DEFAULT_PORT:
            self.say(f"port {rmate_mod.DEFAULT_PORT} is taken on {self.host} (another user's rmate?): "
                     f"the reverse forward uses {port}")
        return port

    def wait_remote_listening(self, port: int, proc: Optional[subprocess.Popen[bytes]], log: Optional[Path]) -> None:
        """Until the target's sshd listens on ``port``, polled in short rounds so a dead ssh is seen at once."""
        command = f"{shell.q(self.s.settings.python)} - {int(port)} 3"
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc is not None and proc.poll() is not None:
                why = explain_failure(log_text(log) if log else "", self.chain)
                raise LabhopError(f"reverse forward for rmate: {why}")
            try:
                run_on_target(self.s.c, command, stdin=source("rmate_listening.py"),
                              what=f"wait for the reverse forward on {self.host}:{port}")
                return
            except LabhopError:
                if time.monotonic() > deadline:
                    raise LabhopError(f"reverse forward for rmate: nothing listens on {self.host}'s "
                                      f"127.0.0.1:{port} after {READY_TIMEOUT:.0f}s") from None

    # ---- the whole thing
    def open(self) -> None:
        if self.reuse_existing():
            return
        rmate_port = self.rmate_port_on_target() if self.req.rmate else None
        if self.req.rmate and port_is_free("127.0.0.1", self.req.editor_port):
            self.s.report.warn(f"nothing listens on 127.0.0.1:{self.req.editor_port} here yet: start your editor's "
                               f"rmate server (rsub, RemoteSubl, Remote VSCode) before running rmate on {self.host}")
        if ssh_binary() is None:
            self._open_paramiko(rmate_port)
        else:
            self._open_openssh(rmate_port)

    def _forwards(self, local_port: Optional[int], rmate_port: Optional[int]) -> Forwards:
        local: tuple[LocalForward, ...] = ()
        if self.req.jupyter and local_port is not None and self.end is not None:
            local = (LocalForward(self.req.bind, local_port, self.end.host, self.end.port),)
        remote: tuple[RemoteForward, ...] = ()
        if rmate_port is not None:
            remote = (RemoteForward(rmate_port, "127.0.0.1", self.req.editor_port),)
        return Forwards(local=local, remote=remote)

    def _pick_local_port(self, start: Optional[int] = None) -> Optional[int]:
        if not self.req.jupyter or self.end is None:
            return None
        wanted = start or self.req.local_port or self.end.port
        if self.req.local_port and not port_is_free(self.req.bind, wanted):
            # The user asked for this port: another one would be a surprise, not a favour.
            raise LabhopError(f"--local-port {wanted}: busy on {self.req.bind} here; pick another, "
                              f"or leave --local-port out to take the next free one")
        port = choose_local_port(wanted, lambda p: port_is_free(self.req.bind, p))
        if port != wanted:
            self.say(f"local port {wanted} is busy here: using {port}")
        return port

    def _open_openssh(self, rmate_port: Optional[int]) -> None:
        log = log_path(self.host, self.kind)
        local_port = self._pick_local_port()
        for _attempt in range(3):  # another program may grab the port between our check and ssh's bind
            argv = self._ssh_argv(self._forwards(local_port, rmate_port))
            if self.req.background:  # a supervisor keeps it open: ssh is started again when it drops
                masters = self.s.target.masters
                argv = supervise.command({"argv": argv, "state": str(state_path(self.host, self.kind)),
                                          "bind": self.req.bind, "port": local_port,
                                          "login": masters.target.path if masters is not None else None})
            proc = self._spawn(argv, log)
            failure = self._wait_local(proc, local_port, log)
            if failure is None:
                break
            if local_port is not None and isinstance(failure, LocalPortBusy) and not self.req.local_port:
                self.say(f"{failure}; trying the next one")
                local_port = self._pick_local_port(local_port + 1)
                continue
            raise LabhopError(f"tunnel via {self.chain.describe()}: {failure}")
        else:
            raise LabhopError(f"tunnel via {self.chain.describe()}: local ports kept getting taken; "
                              "pick one with --local-port")
        try:
            if rmate_port is not None:
                self.wait_remote_listening(rmate_port, proc, log)
            self._verify(local_port, log)
            if rmate_port is not None:
                self._write_rc(rmate_port)
            if self.req.background:
                self._wait_supervised(proc, log)
        except BaseException:
            end_process(proc.pid)
            proc.wait()
            raise
        record = self._record(proc.pid, "openssh", local_port, rmate_port, log, start_time(proc.pid))
        self._announce(local_port, rmate_port)
        if self.req.background:
            write_record(record)
            self.say(f"running in the background (pid {proc.pid}); "
                     f"`{PROGRAM} -H {self.host} {self.kind} --close` ends it")
            return
        self._hold(record, proc=proc, log=log)

    def _ssh_argv(self, forwards: Forwards) -> list[str]:
        """The process that holds the forwards: with the hops' OpenSSH masters (tasks/ssh/master.py), a
        holder of forwards added to the target's master (tasks/tunnel/hold.py: no login of its own);
        else an ssh of its own through the whole chain."""
        masters = self.s.target.masters
        if masters is None:
            return tunnel_argv(self.chain, forwards)
        return hold.command(masters.hold_spec(forward_options(forwards)))

    def _wait_supervised(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        """Tell the supervisor (tasks/tunnel/supervise.py) the tunnel works end to end, and return once it
        says so in its state file: from then on it starts ssh again whenever it drops."""
        path = str(state_path(self.host, self.kind))
        os.kill(proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            state = supervise.read_state(path)
            if state and state.get("supervisor") == proc.pid and state.get("state") == "up":
                return
            if proc.poll() is not None:
                raise LabhopError(f"tunnel via {self.chain.describe()}: "
                                  f"{explain_failure(log_text(log), self.chain)}")
            time.sleep(0.02)
        raise LabhopError(f"tunnel via {self.chain.describe()}: its supervisor did not report it up "
                          f"within {READY_TIMEOUT:.0f}s (see {log})")

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        env = dict(os.environ)
        env["SHELL"] = "/bin/sh"  # the nested ProxyCommands are POSIX sh (shlex.quote)
        env.pop("LABHOP_PASSWORD", None)  # a long-lived ssh has no use for it (tests/integration/test_secrets.py)
        try:
            # Its own session: Ctrl-C here is ours to handle (close cleanly), and a
            # background tunnel outlives this process and its terminal.
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=fd,
                                    env=env, start_new_session=True, close_fds=True)
        finally:
            os.close(fd)

    def _wait_local(self, proc: subprocess.Popen[bytes], local_port: Optional[int],
                    log: Path) -> Optional[SshFailure]:
        """None once the forward listens (ssh binds it only after the whole chain authenticated)."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return diagnose(log_text(log), self.chain)
            if local_port is None:
                # Reverse forward only: ExitOnForwardFailure ends ssh if it fails; the target check follows.
                return None
            if not port_is_free(self.req.bind, local_port):
                return None
            time.sleep(0.05)
        end_process(proc.pid)
        proc.wait()
        return SshFailure(f"no forward after {READY_TIMEOUT:.0f}s ({explain_failure(log_text(log), self.chain)})")

    def _verify(self, local_port: Optional[int], log: Optional[Path]) -> None:
        if self.end is None or local_port is None:
            return
        host = connect_host(self.req.bind)
        status, error = check_http(self.end, host, local_port)
        where = f"{self.host}'s {bracket(self.end.host)}:{self.end.port}"
        if status == 200:
            self._verify_shared(host, local_port)
            return
        if status == 403 and not self.end.public:
            raise LabhopError(f"the tunnel works, but the server on {where} refused labhop's token "
                              f"(is another server holding port {self.end.port} there?)")
        if status is not None:
            raise LabhopError(f"the tunnel works, but {where} answered HTTP {status}")
        far = forward_failure(log_text(log)) if log else None
        if far:
            raise LabhopError(f"the tunnel reached {self.host}, but nothing answers on {where}: {far} "
                              f"(is JupyterLab running? `{PROGRAM} -H {self.host} status`)")
        raise LabhopError(f"the tunnel is up but {where} did not answer through it: {error}")

    def _verify_shared(self, host: str, local_port: int) -> None:
        """--bind beyond loopback: does the server answer other machines too? (Jupyter checks the Host header.)"""
        if ipaddress.ip_address(self.req.bind).is_loopback or self.end is None or self.end.public:
            return
        status, _ = check_http(self.end, host, local_port, timeout=5,
                               host_header=f"{bracket(self.req.bind)}:{local_port}")
        if status == 403:
            self.s.report.warn(
                f"other machines get HTTP 403 through this tunnel: JupyterLab on {self.host} (localhost variant) "
                f"answers only requests addressed to localhost (ServerApp.allow_remote_access is off); "
                f"this machine is fine; for a server others can use, `{PROGRAM} -H {self.host} serve --public`")

    def _write_rc(self, port: int) -> None:
        command = f"{shell.q(self.s.settings.python)} - {int(rmate_mod.DEFAULT_PORT)}"
        result = run_on_target(self.s.c, command, stdin=source("rmate_ports.py"), what="read ~/.rmate.rc")
        plan = rmate_mod.plan_rc(rmate_mod.parse_ports(result.stdout), port)
        for warning in plan.warnings:
            self.s.report.warn(warning)
        apply_steps(self.s.c, plan.steps, on_step=self.s.report.step)

    def _record(self, pid: int, transport: str, local_port: Optional[int], rmate_port: Optional[int],
                log: Optional[Path], proc_start: Optional[str]) -> Record:
        now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        return Record(host=self.host, kind=self.kind, pid=pid, transport=transport,
                      mode="background" if self.req.background else "foreground", started=now,
                      proc_start=proc_start, bind=self.req.bind if local_port else None, local_port=local_port,
                      remote_host=self.end.host if self.end and local_port else None,
                      remote_port=self.end.port if self.end and local_port else None,
                      rmate_port=rmate_port, editor_port=self.req.editor_port if rmate_port else None,
                      log=str(log) if log else None)

    def _announce(self, local_port: Optional[int], rmate_port: Optional[int]) -> None:
        if local_port is not None and self.end is not None:
            shared = "" if ipaddress.ip_address(self.req.bind).is_loopback else \
                f" (listening on {self.req.bind}: shared with your network; the token still guards the server)"
            self.say(f"tunnel: {bracket(self.req.bind)}:{local_port} -> {self.host}:{self.end.port} "
                     f"via {self.chain.describe()}{shared}")
            self.say(f"open: {self.end.url(connect_host(self.req.bind), local_port)}")
        if rmate_port is not None:
            self.say(f"rmate: {self.host}:{rmate_port} -> 127.0.0.1:{self.req.editor_port} here; "
                     f"run `rmate FILE` on {self.host}")

    def _hold(self, record: Record, *, proc: Optional[subprocess.Popen[bytes]] = None, log: Optional[Path] = None,
              close_fabric: bool = True) -> None:
        """Foreground: keep the forwards until Ctrl-C (or SIGTERM/SIGHUP), then close them cleanly."""
        write_record(record)
        if close_fabric:
            _close_fabric(self.s)
        self.say("Ctrl-C closes it")
        try:
            with _terminate_is_interrupt():
                while True:
                    if proc is not None:
                        code = proc.poll()
                        if code is not None:
                            raise LabhopError(f"the tunnel closed by itself: "
                                              f"{explain_failure(log_text(log) if log else '', self.chain)}")
                    time.sleep(0.2)
        except (KeyboardInterrupt, Closed):
            if proc is not None:
                end_process(proc.pid)
                proc.wait()
            self.say("closed")
        finally:
            remove_record(record)

    # ---- no ssh binary here: Fabric's paramiko forwards, foreground only
    def _open_paramiko(self, rmate_port: Optional[int]) -> None:
        if self.req.background:
            raise UsageError("--background needs the OpenSSH client (`ssh`), which is not on PATH here; "
                             "run without --background (paramiko fallback) or install openssh-client")
        self.s.report.warn("no `ssh` client on PATH: falling back to paramiko (Fabric's forward_local/"
                           "forward_remote), several times slower; install openssh-client for the fast path")
        cxn = self.s.c
        local_port = self._pick_local_port()
        with contextlib.ExitStack() as stack:
            if local_port is not None and self.end is not None:
                stack.enter_context(cxn.forward_local(local_port=local_port, remote_port=self.end.port,
                                                      remote_host=self.end.host, local_host=self.req.bind))
                deadline = time.monotonic() + READY_TIMEOUT
                while port_is_free(self.req.bind, local_port):
                    if time.monotonic() > deadline:
                        raise LabhopError(f"paramiko did not listen on {self.req.bind}:{local_port}")
                    time.sleep(0.05)
            if rmate_port is not None:
                stack.enter_context(cxn.forward_remote(remote_port=rmate_port, local_port=self.req.editor_port,
                                                       remote_host="127.0.0.1", local_host="127.0.0.1"))
                self.wait_remote_listening(rmate_port, None, None)
                self._write_rc(rmate_port)
            self._verify(local_port, None)
            record = self._record(os.getpid(), "paramiko", local_port, rmate_port, None, start_time(os.getpid()))
            self._announce(local_port, rmate_port)
            self._hold(record, close_fabric=False)  # paramiko's forwards live in these connections


def _close_fabric(session: Any) -> None:
    """The forwards run in ssh; the Fabric connections used to set them up are not needed any more."""
    with contextlib.suppress(Exception):
        close_chain(session.target)
