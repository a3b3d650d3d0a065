"""labhop's tasks: declarations only (flags, help, one call into the package).

The `labhop` command (tasks/program.py) runs these; the clone's fabfile.py re-exports them for
``fab``. What each task does lives in tasks/actions.py.

Short flags are chosen, not Fabric's first free letter: one letter means one thing in every task,
after ssh's and tail's habits (``-p`` port, ``-b`` bind address, ``-f`` background, ``-n`` lines).
"""
from __future__ import annotations

from typing import Any

from fabric import task
from fabric.tasks import Task

from . import actions
from .cli import edge, flag

SHORT_FLAGS = {"port": "p", "bind": "b", "background": "f", "lines": "n", "json": "j"}


class LabhopTask(Task):  # type: ignore[misc]  # Fabric ships no types
    """A Fabric task whose short flags come from SHORT_FLAGS only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["auto_shortflags"] = False
        super().__init__(*args, **kwargs)

    def arg_opts(self, name: str, default: Any, taken_names: set[str]) -> dict[str, Any]:
        opts = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(opts["names"][0])
        if short and short not in taken_names:
            opts["names"].append(short)
        return opts  # type: ignore[no-any-return]


JSON_HELP = "print one JSON document with every host's result on stdout (human text goes to stderr)"
OFFLINE_HELP = "install from a wheelhouse pushed over SSH, not from the target's package index (found automatically)"
DRY_RUN_HELP = "probe the host and print the plan; change nothing"
KERNEL_HELP = {
    "kernel": "an environment (venv or conda dir) or interpreter on the target to offer as a kernel, besides "
              "`kernels` in inventory.toml and conda's environments (repeatable)",
    "add-ipykernel": "install ipykernel into this environment (its path, or a conda env's name) so that it becomes "
                     "a kernel; never done unasked (repeatable)",
    "with": "an extra package for labhop's venv (the default kernel), pip's syntax, e.g. 'pandas==2.2.*'; adds to "
            "`packages` in inventory.toml (repeatable)",
}
KERNEL_FLAGS = ["kernel", "add_ipykernel", "with_"]


def kernel_flags(kernel: Any, add_ipykernel: Any, with_: Any) -> actions.KernelFlags:
    return actions.KernelFlags(kernels=tuple(kernel or ()), add_ipykernel=tuple(add_ipykernel or ()),
                               packages=tuple(with_ or ()))


@task(klass=LabhopTask, help={"dry-run": DRY_RUN_HELP, "json": JSON_HELP, "offline": OFFLINE_HELP, **KERNEL_HELP},
      iterable=KERNEL_FLAGS)
@edge
def provision(c, dry_run=False, json_=False, offline=False, kernel=None, add_ipykernel=None, with_=None):
    """Install JupyterLab, bcrypt and rmate into an isolated venv on the target, and offer the target's
    environments as kernels (idempotent)."""
    return actions.provision(c, dry_run=dry_run, json_out=json_, offline=offline,
                             kernels=kernel_flags(kernel, add_ipykernel, with_))


@task(klass=LabhopTask, help={
    "public": "serve on all interfaces (or --ip) with a password, instead of localhost with a token",
    "port": "port on the target (default: the server's current one, else `port` in inventory.toml, else 8888 "
            "or the next free one)",
    "ip": "address to listen on (default 127.0.0.1; 0.0.0.0 with --public)",
    "root-dir": "directory JupyterLab opens (default: the target user's home)",
    "password-file": "file holding the --public password (else $LABHOP_PASSWORD, else a prompt)",
    "certfile": "with --public: your TLS certificate (PEM, on this machine) instead of a self-signed one",
    "keyfile": "with --certfile: its private key (PEM, no passphrase)",
    "insecure-http": "with --public: serve plain HTTP, no TLS (the password crosses the network readable)",
    "restart": "restart a running server to apply a change even though its running kernels are lost",
    "dry-run": DRY_RUN_HELP + " (with --slurm: print the job script, check it with sbatch --test-only)",
    "json": JSON_HELP,
    "offline": OFFLINE_HELP,
    "slurm": "run JupyterLab as a Slurm job on a compute node (the host is the login node); see README",
    "partition": "with --slurm: sbatch --partition", "time": "with --slurm: walltime (MINUTES, H:MM:SS, D-HH:MM:SS)",
    "account": "with --slurm: sbatch --account", "qos": "with --slurm: sbatch --qos",
    "gpus": "with --slurm: GPUs, N or TYPE:N (sbatch --gres=gpu:...)", "cpus": "with --slurm: --cpus-per-task",
    "mem": "with --slurm: sbatch --mem (e.g. 16G)", "constraint": "with --slurm: sbatch --constraint",
    "sbatch-arg": "with --slurm: more sbatch options, e.g. --sbatch-arg=--nodelist=node3 (repeatable)",
    "wait": "with --slurm: seconds a pending job may wait before labhop cancels it (default 600)",
    **KERNEL_HELP,
}, iterable=["sbatch_arg", *KERNEL_FLAGS])
@edge
def serve(c, public=False, port=None, ip=None, root_dir=None, password_file=None, certfile=None, keyfile=None,
          insecure_http=False, restart=False, dry_run=False, json_=False, offline=False, slurm=False, partition=None,
          time=None, account=None, qos=None, gpus=None, cpus=None, mem=None, constraint=None, sbatch_arg=None,
          wait=None, kernel=None, add_ipykernel=None, with_=None):
    """Provision if needed, write the server config, start JupyterLab, wait until it answers, print the URL.

    Settings stick: a flag not given (and not set in inventory.toml) keeps the server's current port,
    address, root dir and variant (`--ip 127.0.0.1` turns a --public server back into the token one).
    A running server with live kernels is restarted only with --restart.
    """
    slurm_flags = {"partition": flag(partition), "time": flag(time), "account": flag(account), "qos": flag(qos),
                   "gpus": flag(gpus), "cpus": flag(cpus), "mem": flag(mem), "constraint": flag(constraint),
                   "sbatch_args": tuple(sbatch_arg or ()), "wait": flag(wait)}
    return actions.serve(c, actions.ServeFlags(
        public=public, port=flag(port), ip=flag(ip), root_dir=flag(root_dir), password_file=flag(password_file),
        certfile=flag(certfile), keyfile=flag(keyfile), insecure_http=insecure_http, restart=restart, slurm=slurm,
        slurm_flags=tuple(slurm_flags.items()), kernels=kernel_flags(kernel, add_ipykernel, with_)),
        dry_run=dry_run, json_out=json_, offline=offline)


@task(klass=LabhopTask, help={"json": JSON_HELP})
@edge
def status(c, json_=False):
    """Is JupyterLab running on the target: pid, port, variant, URL, since when; the kernels labhop registered."""
    return actions.status(c, json_out=json_)


@task(klass=LabhopTask, help={"json": JSON_HELP})
@edge
def login(c, json_=False):
    """Log in to the host and its jump hosts once (OpenSSH asks, on the terminal or SSH_ASKPASS); runs share it."""
    return actions.login(c, json_out=json_)


@task(klass=LabhopTask, help={"json": JSON_HELP})
@edge
def logout(c, json_=False):
    """End the logins to the host and its jump hosts that labhop holds open."""
    return actions.logout(c, json_out=json_)


@task(klass=LabhopTask, help={"json": JSON_HELP})
@edge
def stop(c, json_=False):
    """Stop JupyterLab gracefully (stopping a stopped server is fine)."""
    return actions.stop(c, json_out=json_)


@task(klass=LabhopTask, help={"lines": "how many lines from the end of the server log (default 50)"})
@edge
def logs(c, lines=None):
    """Print the tail of JupyterLab's log on the target."""
    return actions.logs(c, flag(lines))


@task(klass=LabhopTask)
@edge
def url(c):
    """Print the URL to open (with the token for the localhost variant); exit 1 when the server is not running."""
    return actions.url(c)


@task(klass=LabhopTask, help={
    "local-port": "port on this machine (default: the server's port, or the next free one when that is busy)",
    "bind": "address to listen on here (default 127.0.0.1; 0.0.0.0 shares the tunnel with your network)",
    "background": "detach and return; `labhop -H HOST tunnel --close` ends it",
    "close": "end the tunnel this machine holds open to the host",
    "rmate": "also open the reverse forward for rmate (see `labhop --help rmate`), in the same ssh",
    "editor-port": "with --rmate: the port your editor listens on here (default 52698)",
})
@edge
def tunnel(c, local_port=None, bind=None, background=False, close=False, rmate=False, editor_port=None):
    """Forward a local port to JupyterLab on the target through every jump host; check the URL, print it."""
    return actions.tunnel(c, local_port=flag(local_port), bind=flag(bind), background=background, close=close,
                          rmate=rmate, editor_port=flag(editor_port))


@task(klass=LabhopTask, help={
    "editor-port": "the port your editor's rmate server listens on here (default 52698)",
    "background": "detach and return; `labhop -H HOST rmate --close` ends it",
    "close": "end the rmate forward this machine holds open to the host",
})
@edge
def rmate(c, editor_port=None, background=False, close=False):
    """Forward rmate's port on the target back to your editor here, so `rmate FILE` there opens it here."""
    return actions.rmate(c, editor_port=flag(editor_port), background=background, close=close)
