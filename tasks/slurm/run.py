"""The thin execution part of ``--slurm``: ask the login node, submit, wait, cancel, report.

Everything it decides comes from the pure modules (options, job, queue); this module only runs
commands on the login node over the session's connection and prints what happened.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from .. import shell
from ..errors import LabhopError
from ..executor import ApplyResult, apply, read_file_tail, run
from ..outcome import HostResult, applied
from ..remote import source
from ..steps import Command, Skip, WriteFile
from ..target.lock import Query as LockQuery
from .job import (Endpoint, JobRecord, Query, SlurmLayout, choose_variant, fingerprint, job_script, parse_answer,
                  parse_sbatch, query_args, render_config, sbatch_argv, scancel_argv)
from .options import SlurmRequest
from .queue import GONE, UNKNOWN, JobState, describe
from ..invocation import PROGRAM
from ..tunnel.records import tunnel_port


def query(c: Any, python: str, prefix: str, job: Optional[JobRecord] = None) -> Query:
    """What the login node says about the job, in one command (remote/slurm_query.py); ``job``: squeue about
    that job (not the recorded one), ``Query.state`` is then that job's."""
    command = f"{shell.q(python)} - {shell.join(query_args(prefix, job))}"
    result = run(c, command, stdin=source("slurm_query.py"), what="asking the login node about the Slurm job")
    return parse_answer(result.stdout, job)


def lock_query(prefix: str) -> LockQuery:
    """The same question, asked by the lock holder right after its probe (one command for a no-op serve)."""
    return LockQuery(source("slurm_query.py"), tuple(query_args(prefix)))


def cancel(c: Any, record: JobRecord) -> None:
    run(c, shell.join(scancel_argv(record)), what=f"scancel {record.id}")


def log_tail(c: Any, record: JobRecord, lines: int = 5) -> str:
    text = read_file_tail(c, record.log, lines) if record.log else ""
    return " | ".join(line.strip() for line in text.splitlines() if line.strip()) or "(empty log)"


def submit(c: Any, layout: SlurmLayout, argv: list[str], script: str, fingerprint: str) -> JobRecord:
    """sbatch with the script on stdin, from the prefix's slurm dir; then labhop's record of the job."""
    command = f"cd {shell.q(layout.dir)} && {shell.join(argv)}"
    try:
        result = run(c, command, stdin=script, what="sbatch")
    except LabhopError as exc:
        raise LabhopError(str(exc).replace("sbatch failed", "sbatch refused the job", 1)) from None
    job_id, cluster = parse_sbatch(result.stdout)
    record = JobRecord(id=job_id, cluster=cluster, fingerprint=fingerprint, submitted=time.time(),
                       log=layout.log(job_id))
    body = record.to_json()
    run(c, shell.atomic_write(layout.record, 0o600, len(body.encode())), stdin=body,
        what=f"write {layout.record}")
    return record


class Waiter:
    """Poll until the job's server answers; on Ctrl-C or time-out while it is not up, cancel the job."""

    def __init__(self, c: Any, python: str, prefix: str, say: Callable[[str], None], warn: Callable[[str], None],
                 *, wait: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.c, self.python, self.prefix, self.say, self.warn = c, python, prefix, say, warn
        self.wait, self.clock, self.sleep = wait, clock, sleep

    def until_up(self, record: JobRecord) -> Query:
        with _interrupts() as interrupted:
            try:
                return self._poll(record, interrupted)
            except KeyboardInterrupt:
                try:
                    cancel(self.c, record)
                    self.warn(f"interrupted: cancelled job {record.id}, nothing is left queued")
                except LabhopError as exc:
                    self.warn(f"interrupted, and cancelling job {record.id} failed: {exc}; `{PROGRAM} stop` cancels it")
                raise

    def _poll(self, record: JobRecord, interrupted: Callable[[], bool]) -> Query:
        started = self.clock()
        deadline = started + self.wait
        last_line, last_said, delay = "", 0.0, 0.5
        while True:
            q = query(self.c, self.python, self.prefix)
            if interrupted():
                raise KeyboardInterrupt
            state = q.state or JobState(GONE)
            if q.serving:
                return q
            if state.state == "COMPLETING" and self.clock() < started + self.wait:
                self.sleep(0.5)  # ending: its final state (FAILED, CANCELLED...) says more
                continue
            if state.ended:
                raise LabhopError(f"job {record.id} ended before JupyterLab answered "
                                  f"({describe(state, now=q.now)}); log: {log_tail(self.c, record)}")
            line = ("starting JupyterLab on " + state.node) if state.running else describe(state, now=q.now)
            now = self.clock()
            if line.split(" (waited")[0] != last_line.split(" (waited")[0] or now - last_said >= 30:
                (self.warn if state.state == UNKNOWN else self.say)(f"job {record.id}: {line}")
                last_line, last_said = line, now
            if now >= deadline:
                cancel(self.c, record)
                raise LabhopError(f"job {record.id} did not serve within {self.wait}s ({line}): cancelled it; "
                                  f"--wait SECONDS waits longer")
            # a controller that does not answer gets more room each time; a pending job is asked every 0.5 s
            # for its first 15 s (most start within seconds), then every 2 s
            quick = state.running or now - started < 15
            delay = min(delay * 2, 10.0) if state.state == UNKNOWN else (0.5 if quick else 2.0)
            until = self.clock() + max(0.1, min(delay, deadline - now))
            while self.clock() < until:
                if interrupted():
                    raise KeyboardInterrupt
                self.sleep(0.1)


@contextlib.contextmanager
def _interrupts() -> Iterator[Callable[[], bool]]:
    """Ctrl-C (SIGINT) and SIGTERM while waiting become a flag the wait loop checks between commands: invoke
    swallows a KeyboardInterrupt raised while a command runs (it sends ^C to the remote stdin instead), which
    would leave the job queued. Only the main thread may set handlers (a fleet runs hosts in threads)."""
    hits: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum: int, frame: Any) -> None:
        hits.append(signum)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(hits)
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def apply_files(s: Any, layout: SlurmLayout, q: Query, config: str, tls_steps: list[Any], *,
                dry_run: bool) -> ApplyResult:
    """The job's directory, the TLS pair (--public) and the server config the job reads."""
    steps: list[Any] = []
    if q.dir_exists:
        steps.append(Skip(f"directory {layout.dir}", "exists"))
    else:
        steps.append(Command(f"create {layout.dir} (0700)", shell.mkdir_private(layout.dir)))
    steps.extend(tls_steps)
    if q.config == config:
        steps.append(Skip(f"write {layout.config_file}", "unchanged"))
    else:
        steps.append(WriteFile(f"write {layout.config_file}", layout.config_file, config, 0o600))
    return apply(s.c, steps, dry_run=dry_run, on_step=s.report.step, on_progress=s.report.say)


def job_data(record: Optional[JobRecord], state: Optional[JobState], endpoint: Optional[Endpoint],
             url: Optional[str], now: str = "") -> dict[str, Any]:
    """The keys ``--json`` carries for a Slurm job (docs/ci.md)."""
    return {
        "slurm_job": record.id if record else None,
        "slurm_cluster": record.cluster if record else None,
        "slurm_state": state.state if state else None,
        "slurm_reason": state.reason if state and state.pending else None,
        "node": (endpoint.node if endpoint else None) or (state.node if state and state.node not in ("", "(null)")
                                                          else None),
        "node_address": f"{endpoint.host}:{endpoint.port}" if endpoint else None,
        "time_left": state.time_left if state and state.running else None,
        "url": url,
    }


def _url(config: str, endpoint: Endpoint, local_port: Optional[int] = None) -> str:
    """The URL to open here once `fab tunnel` forwards to the job (the token in it, like `serve`)."""
    from ..jupyter_config import stored_secrets

    token = stored_secrets(config).token
    base = f"{endpoint.scheme}://127.0.0.1:{local_port or endpoint.port}/lab"
    return f"{base}?token={token}" if token else base


@dataclass(frozen=True)
class Access:
    """How this run asks the job's server to let people in (the serve flags, read on the controller)."""

    tls: Any  # certs.TlsRequest from this run's flags (mode "off" without --public)
    password: Optional[str] = None  # read before connecting when this run is --public
    given_public: bool = False  # --public, or `public` in the inventory
    localhost_asked: bool = False  # a loopback --ip: back to the token variant
    password_file: Optional[str] = None
    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    insecure_http: bool = False


def login_node(s: Any) -> Query:
    """What the login node says about the job (the lock holder asked already, right after its probe: one
    command; a dry run took no lock and asks now), refused in one line where there is no sbatch: before
    anything is written or fetched, so that a first run leaves nothing (the lock removes the prefix it made)."""
    answer = s.query_answer
    q = parse_answer(answer) if answer is not None else query(s.c, s.settings.python, s.settings.prefix)
    if not q.sbatch:
        raise LabhopError("no sbatch on the login node: is this a Slurm login node? (a `module load slurm` "
                          "in ~/.profile is not seen by non-interactive SSH commands; put it in ~/.bashrc)")
    return q


def serve(s: Any, request: SlurmRequest, facts: Any, provision_plan: Any, q: Query, *, access: Access,
          dry_run: bool) -> HostResult:
    """``fab serve --slurm``: provision on the login node, then the job: reuse, wait for, or submit it.
    ``q``: ``login_node``'s answer."""
    import dataclasses
    import os
    import secrets as secrets_mod

    from ..certs import plan_serve_tls, tls_request
    from ..jupyter_config import stored_secrets
    from ..passwords import PASSWORD_ENV, hash_for, read_password
    from ..plan import layout_for, server_settings
    from ..settings import ALL_INTERFACES, LOCALHOST
    from ..target.layout import expand_home

    started = time.monotonic()
    layout = layout_for(facts)
    slurm = SlurmLayout(layout.prefix)
    for warning in provision_plan.warnings:
        s.report.warn(warning)
    s.report.dry_run, s.task = dry_run, "serve"
    outcome = apply(s.c, provision_plan.steps, dry_run=dry_run, on_step=s.report.step, on_progress=s.report.say)
    stored = stored_secrets(q.config)
    variant = choose_variant(public=s.settings.public, given_public=access.given_public,
                             localhost_asked=access.localhost_asked, stored_config=q.config)
    tls, password = access.tls, access.password
    if variant.kept:  # public without --public this time: its TLS mode and (unless given again) its password stay
        tls = tls_request(public=True, certfile=access.certfile, keyfile=access.keyfile,
                          insecure_http=access.insecure_http or not variant.https)
        if access.password_file or os.environ.get(PASSWORD_ENV):
            password = read_password(access.password_file)
    hashed = None
    if variant.public:
        hashed = hash_for(password, stored.hashed_password) if password else stored.hashed_password
    token = stored.token or secrets_mod.token_hex(24)
    # the certificate names the login node as labhop knows it, and localhost: the browser reaches the job
    # through `tunnel` (the compute node is not known before the scheduler picks it)
    tls_plan = plan_serve_tls(tls, facts, [s.target.name, s.target.address, s.target.entry.hostname])
    for warning in tls_plan.warnings:
        s.report.warn(warning)
    # the job's address comes from the node (render_config); the one written first is the variant's default,
    # so that a kept public config renders as the --public run wrote it
    settings = dataclasses.replace(s.settings, public=variant.public,
                                   ip=ALL_INTERFACES if variant.public else LOCALHOST)
    server = server_settings(facts, settings, token=token, hashed_password=hashed, certfile=tls_plan.certfile,
                             keyfile=tls_plan.keyfile)
    config = render_config(server)
    script = job_script(layout, request, home=facts.home, root_dir=expand_home(s.settings.root_dir, facts.home),
                        port=s.settings.port, scheme=server.scheme)
    argv = sbatch_argv(request)
    print_ = fingerprint(script, argv, config, tls=tls_plan.info.fingerprint if tls_plan.info else "")
    changed = [r.step.description for r in outcome.changed]
    files = apply_files(s, slurm, q, config, tls_plan.steps, dry_run=dry_run)
    for line in tls_plan.report_lines():
        s.report.say(line)
    changed += [r.step.description for r in files.changed]
    unchanged = len(outcome.results) + len(files.results) - len(changed)

    record, state = q.record, q.state
    alive = record is not None and state is not None and not state.ended
    why = None
    if alive and record is not None and record.fingerprint != print_:
        why = f"settings changed: cancel job {record.id} and submit a new one"
    elif alive:
        pass  # pending or starting with these settings: wait for it below
    elif record is not None and state is not None:
        why = f"job {record.id} {describe(state, now=q.now)}: submit a new one"
    else:
        why = "no job yet: submit one"

    if dry_run:
        s.report.say("job script (sbatch --parsable reads it on stdin):")
        for line in script.splitlines():
            s.report.say(f"  | {line}")
        check = run(s.c, f"cd {shell.q(facts.home)} && {shell.join(sbatch_argv(request, test_only=True))} 2>&1; "
                         f"echo \"rc=$?\"", stdin=script, what="sbatch --test-only")
        lines = check.stdout.strip().splitlines()
        verdict = [line for line in lines[:-1] if line.strip()]
        if not lines or lines[-1] != "rc=0":
            raise LabhopError(f"sbatch --test-only refused the job: {' | '.join(verdict) or 'no output'}")
        for line in verdict:
            s.report.say(f"  sbatch --test-only: {line}")
        if why:
            s.report.say(f"  would    {why}")
            changed.append(why)
        s.report.say(f"serve: dry run, {len(changed)} step(s) would change; nothing was changed or submitted")
        return applied(s.target.name, "serve", changed, unchanged, dry_run=True,
                       seconds=time.monotonic() - started,
                       tls_fingerprint=tls_plan.info.fingerprint if tls_plan.info else None,
                       **job_data(record, state, q.serving, None))

    if why is not None:
        s.report.say(f"  changed  {why}")
        old = record if alive else None
        record = submit(s.c, slurm, argv, script, print_)  # first: if sbatch refuses, the old job still serves
        on = f" on cluster {record.cluster}" if record.cluster else ""
        s.report.say(f"  changed  submitted job {record.id}{on}; log {record.log}")
        if old is not None:
            stop_job(s, old)
        changed.append(f"submit job {record.id}")
    else:
        s.report.say(f"  ok       job {record.id if record else '?'}: already "
                     f"{'serving' if q.serving else 'submitted'} with these settings")
        unchanged += 1
    assert record is not None
    if q.serving is None or why is not None:
        q = Waiter(s.c, s.settings.python, s.settings.prefix, s.report.say, s.report.warn,
                   wait=request.wait).until_up(record)
    endpoint = q.serving
    assert endpoint is not None and q.state is not None
    url = _url(config, endpoint)
    s.report.say(f"job {record.id}: {describe(q.state, now=q.now)}; JupyterLab at {endpoint.host}:{endpoint.port} "
                 f"(reached through the login node)")
    if q.state.low_walltime():
        s.report.warn(f"job {record.id} has only {q.state.time_left} of walltime left")
    s.report.say(f"open: {url}  (after `{PROGRAM} -H {s.target.name} tunnel`)")
    seconds = time.monotonic() - started
    if not changed:
        s.report.say(f"serve: nothing to do, job {record.id} serves with these settings ({seconds:.1f}s)")
    else:
        s.report.say(f"serve: {len(changed)} changed, {unchanged} unchanged ({seconds:.1f}s)")
    return applied(s.target.name, "serve", changed, unchanged, seconds=time.monotonic() - started,
                   tls_fingerprint=tls_plan.info.fingerprint if tls_plan.info else None,
                   **job_data(record, q.state, endpoint, url, q.now))


def stop_job(s: Any, record: JobRecord, *, timeout: float = 60) -> None:
    """scancel, then wait until squeue no longer shows it alive (it may take KillWait seconds)."""
    cancel(s.c, record)
    deadline = time.monotonic() + timeout
    while True:
        q = query(s.c, s.settings.python, s.settings.prefix, job=record)
        if q.state is None or q.state.over:
            s.report.say(f"  changed  cancelled job {record.id} ({q.state.state if q.state else 'gone'})")
            return
        if time.monotonic() > deadline:
            raise LabhopError(f"job {record.id} is still {q.state.state} {int(timeout)}s after scancel")
        time.sleep(0.5)


def status(s: Any) -> Optional[dict[str, Any]]:
    """The job's lines for `fab status`, and its keys for --json; None when labhop never submitted one here."""
    q = query(s.c, s.settings.python, s.settings.prefix)
    if q.record is None or q.state is None:
        return None
    record, state = q.record, q.state
    endpoint = q.serving
    url = _url(q.config or "", endpoint, tunnel_port(s.target.name)) if endpoint else None
    s.report.say(f"slurm: job {record.id} {describe(state, now=q.now)}")
    if endpoint:
        s.report.say(f"slurm: JupyterLab on {endpoint.node} at {endpoint.host}:{endpoint.port}")
        s.report.say(f"open: {url}  (after `{PROGRAM} -H {s.target.name} tunnel`)")
    elif state.running:
        s.report.say("slurm: JupyterLab is starting (it has not answered yet)")
    if state.low_walltime():
        s.report.warn(f"job {record.id} has only {state.time_left} of walltime left")
    if state.ended:
        s.report.say(f"slurm: last lines of {record.log}: {log_tail(s.c, record)}")
        s.report.say(f"`{PROGRAM} -H {s.target.name} serve --slurm` submits a new job")
    return {**job_data(record, state, endpoint, url, q.now), "running": bool(endpoint)}


def stop(s: Any) -> Optional[HostResult]:
    """`fab stop` for a Slurm job: scancel and wait until it is gone; None when there is no job record."""
    q = query(s.c, s.settings.python, s.settings.prefix)
    if q.record is None:
        return None
    if q.state is not None and q.state.over:
        s.report.say(f"  ok       job {q.record.id}: {describe(q.state, now=q.now)}")
        return applied(s.target.name, "stop", [], 1, **job_data(q.record, q.state, None, None))
    stop_job(s, q.record)
    return applied(s.target.name, "stop", [f"cancel job {q.record.id}"], 0,
                   **job_data(q.record, JobState("CANCELLED"), None, None))


def logs(s: Any, lines: int) -> Optional[str]:
    q = query(s.c, s.settings.python, s.settings.prefix)
    if q.record is None:
        return None
    return read_file_tail(s.c, q.record.log, lines)


def tunnel_end(s: Any) -> Any:
    """What `fab tunnel` forwards to for a Slurm job: the node's address as the login node reaches it."""
    from ..jupyter_config import stored_secrets
    from ..tunnel.forward import JupyterEnd

    q = query(s.c, s.settings.python, s.settings.prefix)
    if q.record is None:
        return None
    endpoint = q.serving
    if endpoint is None:
        raise LabhopError(f"job {q.record.id} is not serving ({describe(q.state or JobState(GONE), now=q.now)}): "
                          f"`{PROGRAM} -H {s.target.name} serve --slurm` starts one")
    return JupyterEnd(host=endpoint.host, port=endpoint.port, scheme=endpoint.scheme,
                      token=stored_secrets(q.config).token, public=not stored_secrets(q.config).token)


def url(s: Any) -> str:
    """`fab url` for a Slurm job: the URL to open once `tunnel` forwards to it; exit 1 when it does not serve."""
    q = query(s.c, s.settings.python, s.settings.prefix)
    if q.record is None or q.serving is None:
        state = describe(q.state, now=q.now) if q.state else "no job"
        raise LabhopError(f"no Slurm job serves here ({state}): "
                          f"`{PROGRAM} -H {s.target.name} serve --slurm` starts one")
    return _url(q.config or "", q.serving, tunnel_port(s.target.name))
