"""Fabric's ``Connection`` over OpenSSH masters: ``c.run`` as a mux client of the target's master.

Fabric stays the task framework (``c.run``, ``-H``, ``-S``, fabric.yaml); what changes is the
transport. ``share(cxn, masters)`` turns the target's Connection into a ``SharedConnection``:
``open()`` makes sure every hop's master is live (master.py), and ``run`` goes through
``MasterRunner`` (``runners.remote`` in the connection's config), an invoke ``Local`` runner
whose process is ``ssh -S <socket> -o ControlMaster=no HOST -- COMMAND``. invoke's ``Result``,
``UnexpectedExit``, ``warn``/``hide`` and in/out streams work as for any runner; the chunked
stdin payloads of executor.py are read the same way.

ssh exits 255 for a lost connection and for a remote 255 alike: when it does, the master is
checked, and a dead one reports -1 (what paramiko reports for a channel closed without a status).

A target whose sshd allows one session per connection (``MaxSessions 1``) refuses a second command
while the first runs (the run's lock holder is one): the refused command, which never started there,
runs again on another master of the target's (``Masters.solo``: a few, kept like the first, so a second
factor is asked for each once, not per command), and the target is remembered as such, so later runs
go there at once when a session is already open. ``MaxSessions 0`` (no command sessions at all, only
forwarding: a jump host's policy) refuses a master's first session too: one line says so.

Binary uploads are a mux client too: ``cat`` on the target, the bytes on ssh's stdin.
"""
from __future__ import annotations

import shlex
import subprocess
from typing import Any, Iterable, Optional

from fabric import Connection
from invoke.exceptions import UnexpectedExit
from invoke.runners import Local

from ..errors import LabhopError
from .master import SESSION_REFUSED, Master, Masters, child_env
from .openssh import hop_title

CONNECTION_LOST = -1


class MasterRunner(Local):
    """An invoke runner whose process is a mux client of the connection's master."""

    def __init__(self, context: Any, inline_env: Optional[bool] = None) -> None:
        super().__init__(context)

    def should_use_pty(self, pty: bool = False, fallback: bool = True) -> bool:
        self._remote_pty = pty
        return False  # a remote pty is ssh's -tt; the local side stays pipes

    def start(self, command: str, shell: str, env: dict[str, Any]) -> None:
        if env:  # as Fabric's Remote runner: exported in front of the command
            command = "export " + " ".join(f"{k}={shlex.quote(str(v))}" for k, v in sorted(env.items())) \
                + " && " + command
        master: Master = self.context.masters.current
        options = ["-tt"] if getattr(self, "_remote_pty", False) else ["-T"]
        self.process = subprocess.Popen([*master.client_argv(*options), "--", command], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())

    def generate_env(self, env: dict[str, Any], replace_env: bool) -> dict[str, Any]:
        return dict(env)  # only what the task asked for goes to the target, never this machine's env

    def returncode(self) -> Optional[int]:
        code = super().returncode()
        if code == 255 and not self.context.masters.current.check():
            return CONNECTION_LOST
        return code


class SharedConnection(Connection):  # type: ignore[misc]  # fabric ships no type hints
    """A Fabric Connection whose commands ride the hop's OpenSSH master."""

    masters: Masters

    @property
    def master(self) -> Master:
        return self.masters.target

    @property
    def is_connected(self) -> bool:
        return self.masters.target.check()

    def open(self) -> None:
        self.masters.ensure()

    def run(self, command: str, **kwargs: Any) -> Any:
        """Fabric's ``run`` on the target's master; on a connection of its own where the target's sshd
        refuses one more session (MaxSessions 1), the refused attempt having run nothing there."""
        masters = self.masters
        warn = kwargs.pop("warn", self.config.run.warn)
        if not masters.in_solo and masters.one_session and masters.busy:
            result = self._run_solo(command, kwargs)
        else:
            with masters.session():
                result = super().run(command, warn=True, **kwargs)
            if result.exited == 255 and SESSION_REFUSED in (result.stderr or ""):
                _rewind(kwargs.get("in_stream"))
                result = self._run_solo(command, kwargs)
                masters.remember_one_session()
        if result.failed and not warn:
            raise UnexpectedExit(result)
        return result

    def _run_solo(self, command: str, kwargs: dict[str, Any]) -> Any:
        """``command`` on one of the target's extra masters; the next one where another run holds this one's
        session; a master started just now that refuses its first session: MaxSessions 0, one line."""
        masters = self.masters
        tried: list[int] = []
        while True:
            with masters.session(), masters.solo(skip=tried) as (master, slot, started):
                result = super().run(command, warn=True, **kwargs)
            if not (result.exited == 255 and SESSION_REFUSED in (result.stderr or "")):
                return result
            if started:
                masters.close(master)  # of no use to anyone
                chain = masters.chain
                raise LabhopError(f"{hop_title(chain, len(chain.hops) - 1)}: its sshd refuses every command session, "
                                  f"on a connection of its own too (MaxSessions 0: forwarding only, as on a jump "
                                  f"host); labhop needs to run commands there")
            tried.append(slot)
            _rewind(kwargs.get("in_stream"))

    def sftp(self) -> Any:
        raise LabhopError("no SFTP session on a shared OpenSSH connection (uploads go through write_file)")

    def write_file(self, dest: str, chunks: Iterable[bytes], *, append: bool) -> None:
        """``chunks`` into ``dest`` on the target (appended to when resuming), over the master."""
        masters = self.masters
        if masters.busy and not masters.in_solo:
            if not masters.one_session:  # find out before the chunks go (they cannot be read twice)
                self.run("true", hide=True, warn=True, in_stream=False)
            if masters.one_session:
                with masters.session(), masters.solo():
                    self._write(dest, chunks, append=append)
                return
        with masters.session():
            self._write(dest, chunks, append=append)

    def _write(self, dest: str, chunks: Iterable[bytes], *, append: bool) -> None:
        redirect = ">>" if append else ">"
        command = f"umask 077 && cat {redirect} {shlex.quote(dest)}"
        master = self.masters.current
        proc = subprocess.Popen([*master.client_argv("-T"), "--", "sh -c " + shlex.quote(command)],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=child_env())
        assert proc.stdin is not None and proc.stderr is not None
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)
            proc.stdin.close()
        except BrokenPipeError:  # cat is gone: its status and stderr say why
            pass
        except BaseException:  # a source file went missing, an interrupt: nothing half-sent stays running
            proc.kill()
            proc.wait()
            raise
        err = proc.stderr.read().decode(errors="replace").strip()
        code = proc.wait()
        if code == 255 and not master.check():
            raise LabhopError(f"writing {dest}: the SSH connection was lost; run the task again, it resumes")
        if code == 255 and SESSION_REFUSED in err:  # another run took the target's one session meanwhile
            self.masters.remember_one_session()
            raise LabhopError(f"writing {dest}: the target refused one more SSH session (MaxSessions 1); "
                              f"run the task again, it resumes")
        if code != 0:
            raise OSError(f"writing {dest} failed (exit {code}): {err.splitlines()[-1] if err else 'no message'}")


def _rewind(stream: Any) -> None:
    """A refused command's stdin, from its start again: it was never read on the target."""
    if hasattr(stream, "rewind"):
        stream.rewind()
    elif hasattr(stream, "seek"):
        stream.seek(0)
    elif stream not in (None, False):
        raise LabhopError("the target refused one more SSH session (MaxSessions 1) for a command whose input "
                          "cannot be sent twice; run the task again")


def share(cxn: Connection, masters: Masters) -> SharedConnection:
    """Put ``cxn`` (the target's Connection, as Fabric and connect.py made it) on the masters.

    The class is swapped in place: the Connection keeps everything Fabric resolved (config,
    ssh_config, user, port), and the tasks keep using the object Fabric handed them.
    """
    config = cxn.config.clone()  # its own: other hosts of a fleet may share the one Fabric made
    config.runners.remote = MasterRunner
    cxn.__class__ = SharedConnection
    shared: SharedConnection = cxn
    shared.config = config
    shared._set(masters=masters)  # an attribute, not a config key (invoke's DataProxy)
    return shared
