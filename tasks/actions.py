"""What each task does (tasks/commands.py declares them): open a session, plan, apply, report.

Wording and decisions that need no connection live in pure modules (server.py for the status
and URL lines, plan.py for steps), so that unit tests reach them with probe facts in.
A task imports what only it uses (TLS, bcrypt, tunnels) itself: a no-op provision should not pay
for the rest.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from .cli import open_session
from .errors import UsageError
from .executor import probe, read_file_tail
from .inventory import HostEntry
from .offline.wheelcache import wheelhouse_for
from .outcome import HostResult, observed
from .plan import layout_for, plan_provision, plan_serve, plan_stop, server_settings
from .serving import Given, choose_settings
from .settings import DEFAULT_PORT

DEFAULT_LOG_LINES = 50


@dataclass(frozen=True)
class KernelFlags:
    """--kernel, --add-ipykernel, --with (each repeatable; added to the inventory's lists for this run)."""

    kernels: tuple[str, ...] = ()
    add_ipykernel: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()

    def settings(self) -> dict[str, Any]:
        return {"kernels": list(self.kernels), "add_ipykernel": list(self.add_ipykernel),
                "packages": list(self.packages)}


def provision(c: Any, *, dry_run: bool, json_out: bool, offline: bool,
              kernels: KernelFlags = KernelFlags()) -> HostResult:
    s = open_session(c, json_out=json_out, offline=offline or None, **kernels.settings())
    facts = s.lock_and_probe("provision", dry_run=dry_run, install=True)
    wheels = wheelhouse_for(facts, s.settings, s.report.say, dry_run=dry_run)
    return s.result(s.apply(plan_provision(facts, s.settings, wheels), "provision", dry_run=dry_run))


@dataclass(frozen=True)
class ServeFlags:
    """What the user gave `serve` this time (``None``: not given)."""

    public: bool = False
    port: Optional[str] = None
    ip: Optional[str] = None
    root_dir: Optional[str] = None
    password_file: Optional[str] = None
    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    insecure_http: bool = False
    restart: bool = False
    slurm: bool = False
    slurm_flags: tuple[tuple[str, Any], ...] = ()  # labhop.slurm.options.SCHEMA keys -> value or None
    kernels: KernelFlags = KernelFlags()


def slurm_request(s: Any, flags: ServeFlags) -> Any:
    """``--slurm``'s request (flags over [hosts.NAME.slurm]), validated before any connection; None without it."""
    from .slurm.options import resolve_request, split_args

    given = {k: v for k, v in flags.slurm_flags if v not in (None, "", ())}
    if not flags.slurm:
        if given:
            raise UsageError(f"--{next(iter(given)).replace('_', '-')} needs --slurm")
        return None
    if "sbatch_args" in given:
        given["sbatch_args"] = split_args(given["sbatch_args"])
    return resolve_request(dict(s.target.entry.slurm or ()), given,
                           table=f"[hosts.{s.target.name}.slurm] in the inventory")


def given_settings(flags: ServeFlags, entry: HostEntry) -> Given:
    """The server settings this run names (a flag or the inventory): only those may change a running server."""
    return Given(port=flags.port is not None or entry.port is not None,
                 ip=flags.ip is not None or entry.ip is not None,
                 root_dir=flags.root_dir is not None or entry.root_dir is not None,
                 public=flags.public or entry.public is not None)


def serve(c: Any, flags: ServeFlags, *, dry_run: bool, json_out: bool, offline: bool) -> HostResult:
    from .certs import plan_serve_tls, tls_request
    from .jupyter_config import render, stored_secrets
    from .passwords import PASSWORD_ENV, read_password
    from .server import hashed_password_for, token_for, url_for

    s = open_session(c, json_out=json_out, public=flags.public or None, port=flags.port, ip=flags.ip,
                     root_dir=flags.root_dir, offline=offline or None, connect=False, **flags.kernels.settings())
    request = slurm_request(s, flags)
    given = given_settings(flags, s.target.entry)
    if request is not None:
        from .serving import is_loopback
        from .slurm import run as slurm_run

        # the TLS flags and the password are checked here, before anything connects (as below)
        access = slurm_run.Access(
            tls=tls_request(public=s.settings.public, certfile=flags.certfile, keyfile=flags.keyfile,
                            insecure_http=flags.insecure_http),
            password=read_password(flags.password_file) if s.settings.public else None,
            given_public=given.public, localhost_asked=given.ip and is_loopback(s.settings.ip),
            password_file=flags.password_file, certfile=flags.certfile, keyfile=flags.keyfile,
            insecure_http=flags.insecure_http)
        s.connect()
        facts = s.lock_and_probe("serve", dry_run=dry_run, install=True,
                                 query=slurm_run.lock_query(s.settings.prefix))
        job = slurm_run.login_node(s)
        wheels = wheelhouse_for(facts, s.settings, s.report.say, dry_run=dry_run)
        return slurm_run.serve(s, request, facts, plan_provision(facts, s.settings, wheels), job, access=access,
                               dry_run=dry_run)
    s.connect()
    # What can be checked on this machine is, before anything connects (TLS files, the password).
    tls = tls_request(public=s.settings.public, certfile=flags.certfile, keyfile=flags.keyfile,
                      insecure_http=flags.insecure_http)
    password = read_password(flags.password_file) if s.settings.public else None
    facts = s.lock_and_probe("serve", dry_run=dry_run, port=s.settings.port if given.port else None,
                             ip=s.settings.ip, install=True, root_dir=s.settings.root_dir if given.root_dir else None,
                             scan_from=None if given.port else DEFAULT_PORT)
    choice = choose_settings(s.settings, given, facts)
    settings = choice.settings
    for note in choice.notes:
        s.report.say(note)
    hashed = hashed_password_for(facts, password) if password else None
    if choice.kept_public:  # the public variant stays: its password (unless given again) and TLS mode too
        tls = tls_request(public=True, certfile=flags.certfile, keyfile=flags.keyfile,
                          insecure_http=flags.insecure_http or not choice.kept_https)
        if flags.password_file or os.environ.get(PASSWORD_ENV):
            hashed = hashed_password_for(facts, read_password(flags.password_file))
        else:
            hashed = stored_secrets(facts.config).hashed_password
    wheels = wheelhouse_for(facts, settings, s.report.say, dry_run=dry_run)
    tls_plan = plan_serve_tls(tls, facts, [None if s.target.is_local else s.target.name, s.target.address,
                                           s.target.entry.hostname, settings.ip])
    server = server_settings(facts, settings, token=token_for(facts), hashed_password=hashed,
                             certfile=tls_plan.certfile, keyfile=tls_plan.keyfile)
    plan = plan_serve(facts, settings, server, files=tls_plan.steps, wheelhouse=wheels, restart=flags.restart)
    plan.warnings.extend(tls_plan.warnings)
    outcome = s.apply(plan, "serve", dry_run=dry_run)
    for line in tls_plan.report_lines():
        s.report.say(line)
    link = None if dry_run else url_for(render(server), s.target.address)
    if link:
        s.report.say(f"open: {link}")
    return s.result(outcome, url=link, tls_fingerprint=tls_plan.info.fingerprint if tls_plan.info else None)


def status(c: Any, *, json_out: bool) -> HostResult:
    from .kernels import kernel_facts, kernel_lines, registered_kernels
    from .server import status_lines, status_of
    from .tunnel.forward import status_data
    from .tunnel.forward import status_lines as tunnel_lines
    from .tunnel.records import tunnel_port

    from .slurm import run as slurm_run
    from .ssh.login import login_line

    s = open_session(c, json_out=json_out)
    facts = probe(s.c, s.settings)
    st = status_of(s.target.name, facts, s.target.address, local_port=tunnel_port(s.target.name))
    job = slurm_run.status(s) if facts.slurm_job else None
    lines = status_lines(st) if job is None or st.running or st.stale_pid else []
    kernels = registered_kernels(kernel_facts(facts.kernels))
    login_text, login_data = login_line(s.target)
    for line in lines + kernel_lines(kernels) + tunnel_lines(s.target.name) + ([login_text] if login_text else []):
        s.report.say(line)
    data = {**st.as_dict(), "tunnels": status_data(s.target.name), "kernels": kernels, "login": login_data}
    if job is not None:  # a job's url/running stand for the host unless a server also runs on the login node
        data.update({k: v for k, v in job.items() if k not in ("url", "running") or not st.running})
    return observed("status", data)


def login(c: Any, *, json_out: bool) -> HostResult:
    from .ssh.login import login as log_in

    s = open_session(c, json_out=json_out, connect=False)
    return HostResult(host=s.target.name, task="login", result="logged in", data=log_in(s.target, s.report.say))


def logout(c: Any, *, json_out: bool) -> HostResult:
    from .ssh.login import logout as log_out

    s = open_session(c, json_out=json_out, connect=False)
    return HostResult(host=s.target.name, task="logout", result="logged out", data=log_out(s.target, s.report.say))


def stop(c: Any, *, json_out: bool) -> HostResult:
    from .slurm import run as slurm_run

    s = open_session(c, json_out=json_out)
    facts = s.lock_and_probe("stop")
    job = slurm_run.stop(s) if facts.slurm_job else None
    if job is not None and not facts.server.alive and facts.server.pid is None:
        return job
    return s.result(s.apply(plan_stop(facts), "stop"))


def log_lines(value: Optional[str]) -> int:
    """``--lines``: a count of lines, 1 or more (a usage error otherwise, before any connection)."""
    if value is None:
        return DEFAULT_LOG_LINES
    try:
        lines = int(str(value))
    except ValueError:
        raise UsageError(f"--lines: {value!r} is not a number of lines") from None
    if lines < 1:
        raise UsageError(f"--lines: {lines} is not a number of lines (1 or more)")
    return lines


def logs(c: Any, lines: Optional[str]) -> None:
    from .slurm import run as slurm_run

    count = log_lines(lines)
    s = open_session(c)
    facts = probe(s.c, s.settings)
    job_log = slurm_run.logs(s, count) if facts.slurm_job and not facts.server.alive else None
    if job_log is not None:
        print(job_log, end="")
        return
    print(read_file_tail(s.c, layout_for(facts).log_file, count), end="")


def url(c: Any) -> None:
    from .server import url_or_why
    from .tunnel.records import tunnel_port

    s = open_session(c)
    facts = probe(s.c, s.settings)
    if facts.slurm_job and not facts.server.alive:
        from .slurm import run as slurm_run

        print(slurm_run.url(s))
        return
    print(url_or_why(facts, s.target.address, local_port=tunnel_port(s.target.name)))


def tunnel(c: Any, *, local_port: Optional[str], bind: Optional[str], background: bool, close: bool, rmate: bool,
           editor_port: Optional[str]) -> None:
    from .tunnel.forward import TUNNEL, close_forwards, open_forwards, request_from_flags

    request = request_from_flags(jupyter=True, rmate=rmate, local_port=local_port, bind=bind,
                                 editor_port=editor_port, background=background, close=close)
    from .slurm import run as slurm_run

    s = open_session(c, connect=not close)
    if close:
        return close_forwards(s, TUNNEL)
    facts = probe(s.c, s.settings)
    end = slurm_run.tunnel_end(s) if not facts.server.alive and facts.slurm_job else None
    open_forwards(s, request, facts, end=end)


def rmate(c: Any, *, editor_port: Optional[str], background: bool, close: bool) -> None:
    from .tunnel.forward import RMATE, close_forwards, open_forwards, request_from_flags

    request = request_from_flags(jupyter=False, rmate=True, editor_port=editor_port,
                                 background=background, close=close)
    s = open_session(c, connect=not close)
    if close:
        return close_forwards(s, RMATE)
    open_forwards(s, request, None)

