"""labhop: JupyterLab on a machine you reach over SSH, and the way to it.

    fab provision serve              # this machine
    fab -H internal provision serve  # a host from inventory.toml or ssh_config
"""
from __future__ import annotations

import gc
import sys

from fabric import task

# invoke turns .pyc writing off for the whole run (its --write-pyc flag), which recompiled
# labhop's modules on every `fab` (~0.1 s of each command). labhop's package caches its
# bytecode as any installed package does; PYTHONDONTWRITEBYTECODE / -B still turn that off.
sys.dont_write_bytecode = bool(sys.flags.dont_write_bytecode)

from labhop.cli import edge, flag, open_session
from labhop.executor import probe, read_file_tail
from labhop.plan import layout_for, plan_provision, plan_serve, plan_stop, server_settings
from labhop.errors import LabhopError
from labhop.outcome import observed
from labhop.offline.wheelcache import wheelhouse_for

# A task imports what only it uses (TLS, bcrypt, tunnels) itself: every fab run loads this file,
# and a no-op provision should not pay for the rest.

JSON_HELP = "print one JSON document with every host's result on stdout (human text goes to stderr)"
OFFLINE_HELP = "install from a wheelhouse pushed over SSH, not from the target's package index (found automatically)"


@task(help={"dry-run": "probe the host and print the plan; change nothing", "json": JSON_HELP,
            "offline": OFFLINE_HELP})
@edge
def provision(c, dry_run=False, json_=False, offline=False):
    """Install JupyterLab, bcrypt and rmate into an isolated venv on the target (idempotent)."""
    s = open_session(c, json_out=json_, offline=offline or None)
    facts = s.lock_and_probe("provision", dry_run=dry_run, install=True)
    wheels = wheelhouse_for(facts, s.settings, s.report.say, dry_run=dry_run)
    return s.result(s.apply(plan_provision(facts, s.settings, wheels), "provision", dry_run=dry_run))


@task(help={
    "public": "serve on all interfaces (or --ip) with a password, instead of localhost with a token",
    "port": "port on the target (default 8888, or `port` in inventory.toml)",
    "ip": "address to listen on (default 127.0.0.1; 0.0.0.0 with --public)",
    "root-dir": "directory JupyterLab opens (default: the target user's home)",
    "password-file": "file holding the --public password (else $LABHOP_PASSWORD, else a prompt)",
    "certfile": "with --public: your TLS certificate (PEM, on this machine) instead of a self-signed one",
    "keyfile": "with --certfile: its private key (PEM, no passphrase)",
    "insecure-http": "with --public: serve plain HTTP, no TLS (the password crosses the network readable)",
    "dry-run": "probe the host and print the plan; change nothing",
    "json": JSON_HELP,
    "offline": OFFLINE_HELP,
})
@edge
def serve(c, public=False, port=None, ip=None, root_dir=None, password_file=None, certfile=None, keyfile=None,
          insecure_http=False, dry_run=False, json_=False, offline=False):
    """Provision if needed, write the server config, start JupyterLab, wait until it answers, print the URL."""
    from labhop.certs import plan_serve_tls, tls_request
    from labhop.jupyter_config import render
    from labhop.passwords import read_password
    from labhop.server import hashed_password_for, token_for, url_for

    s = open_session(c, json_out=json_, public=public or None, port=flag(port), ip=flag(ip), root_dir=flag(root_dir),
                     offline=offline or None)
    tls = tls_request(public=s.settings.public, certfile=flag(certfile), keyfile=flag(keyfile),
                      insecure_http=insecure_http)
    password = read_password(flag(password_file)) if s.settings.public else None
    facts = s.lock_and_probe("serve", dry_run=dry_run, port=s.settings.port, ip=s.settings.ip, install=True)
    wheels = wheelhouse_for(facts, s.settings, s.report.say, dry_run=dry_run)
    credentials = {"token": token_for(facts),
                   "hashed_password": hashed_password_for(facts, password) if password else None}
    tls_plan = plan_serve_tls(tls, facts, [None if s.target.is_local else s.target.name, s.target.address,
                                           s.target.entry.hostname, s.settings.ip])
    server = server_settings(facts, s.settings, **credentials, certfile=tls_plan.certfile, keyfile=tls_plan.keyfile)
    plan = plan_serve(facts, s.settings, server, files=tls_plan.steps, wheelhouse=wheels)
    plan.warnings.extend(tls_plan.warnings)
    outcome = s.apply(plan, "serve", dry_run=dry_run)
    for line in tls_plan.report_lines():
        s.report.say(line)
    link = None if dry_run else url_for(render(server), s.target.address)
    if link:
        s.report.say(f"open: {link}")
    return s.result(outcome, url=link, tls_fingerprint=tls_plan.info.fingerprint if tls_plan.info else None)


@task(help={"json": JSON_HELP})
@edge
def status(c, json_=False):
    """Is JupyterLab running on the target: pid, port, variant, URL, since when."""
    from labhop.server import status_of
    from labhop.tunnel.forward import status_data, status_lines

    s = open_session(c, json_out=json_)
    facts = probe(s.c, s.settings)
    st = status_of(s.target.name, facts, s.target.address)
    if st.running:
        s.report.say(f"running: pid {st.pid}, port {st.port}, {st.variant}, since {st.since}")
        s.report.say(f"open: {st.url}")
    elif st.stale_pid:
        s.report.say(f"not running: JupyterLab (pid {st.stale_pid}) died unexpectedly, its pid file is stale; "
                     f"`fab serve` starts it again, `fab logs` shows its last lines")
    else:
        s.report.say("not running")
    for line in status_lines(s.target.name):
        s.report.say(line)
    return observed("status", {**st.as_dict(), "tunnels": status_data(s.target.name)})


@task(help={"json": JSON_HELP})
@edge
def stop(c, json_=False):
    """Stop JupyterLab gracefully (stopping a stopped server is fine)."""
    s = open_session(c, json_out=json_)
    facts = s.lock_and_probe("stop")
    return s.result(s.apply(plan_stop(facts), "stop"))


@task(help={"lines": "how many lines from the end of the server log (default 50)"})
@edge
def logs(c, lines=50):
    """Print the tail of JupyterLab's log on the target."""
    s = open_session(c)
    facts = probe(s.c, s.settings)
    print(read_file_tail(s.c, layout_for(facts).log_file, int(lines)), end="")


@task
@edge
def url(c):
    """Print the URL to open (with the token for the localhost variant)."""
    from labhop.server import url_for

    s = open_session(c)
    facts = probe(s.c, s.settings)
    found = url_for(facts.config, s.target.address)
    if not found:
        raise LabhopError("no server configured here yet: run `fab serve` first")
    print(found)


@task(help={
    "local-port": "port on this machine (default: the server's port, or the next free one when that is busy)",
    "bind": "address to listen on here (default 127.0.0.1; 0.0.0.0 shares the tunnel with your network)",
    "background": "detach and return; `fab -H HOST tunnel --close` ends it",
    "close": "end the tunnel this machine holds open to the host",
    "rmate": "also open the reverse forward for rmate (see `fab --help rmate`), in the same ssh",
    "editor-port": "with --rmate: the port your editor listens on here (default 52698)",
})
@edge
def tunnel(c, local_port=None, bind=None, background=False, close=False, rmate=False, editor_port=None):
    """Forward a local port to JupyterLab on the target through every jump host; check the URL, print it."""
    from labhop.tunnel.forward import TUNNEL, close_forwards, open_forwards, request_from_flags

    request = request_from_flags(jupyter=True, rmate=rmate, local_port=flag(local_port), bind=flag(bind),
                                 editor_port=flag(editor_port), background=background, close=close)
    s = open_session(c, connect=not close)
    if close:
        return close_forwards(s, TUNNEL)
    open_forwards(s, request, probe(s.c, s.settings))


@task(help={
    "editor-port": "the port your editor's rmate server listens on here (default 52698)",
    "background": "detach and return; `fab -H HOST rmate --close` ends it",
    "close": "end the rmate forward this machine holds open to the host",
})
@edge
def rmate(c, editor_port=None, background=False, close=False):
    """Forward rmate's port on the target back to your editor here, so `rmate FILE` there opens it here."""
    from labhop.tunnel.forward import RMATE, close_forwards, open_forwards, request_from_flags

    request = request_from_flags(jupyter=False, rmate=True, editor_port=flag(editor_port),
                                 background=background, close=close)
    s = open_session(c, connect=not close)
    if close:
        return close_forwards(s, RMATE)
    open_forwards(s, request, None)


# What fab and labhop imported lives until fab exits: freeze it out of the garbage collector's
# full collections, which walked all of it again and again (measured: ~0.1 s of a no-op run).
gc.freeze()
