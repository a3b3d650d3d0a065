"""The job labhop submits: its files below the prefix, its script, its server config, sbatch's argv and answer.

Pure. No secret is in the script or an argv: the token (or password hash) stays in the 0600 config,
which the job's JupyterLab reads from the shared home.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Optional

from .. import shell
from ..errors import LabhopError
from ..jupyter_config import ServerSettings, render, stored_secrets, stored_server
from ..remote import source
from ..target.layout import Layout
from .options import SlurmRequest
from .queue import FORMAT, UNKNOWN, JobState, parse_squeue

JOB_NAME = "labhop-jupyter"
# The job's JupyterLab takes its address and port from these (the launcher sets them on the node).
IP_ENV, PORT_ENV = "LABHOP_SLURM_IP", "LABHOP_SLURM_PORT"
# Exit status of a job whose venv cannot run on the node (no shared home, another CPU architecture).
NO_VENV_EXIT = 3
VENV_CHECK = "import importlib.util, sys; sys.exit(importlib.util.find_spec('jupyterlab') is None)"


@dataclass(frozen=True)
class SlurmLayout:
    """Paths on the login node (and, through the shared home, on the compute nodes)."""

    prefix: str

    @property
    def dir(self) -> str:
        return posixpath.join(self.prefix, "slurm")

    @property
    def config_dir(self) -> str:
        return posixpath.join(self.dir, "jupyter")

    @property
    def config_file(self) -> str:
        return posixpath.join(self.config_dir, "jupyter_server_config.py")

    @property
    def record(self) -> str:
        """What labhop submitted: job id, cluster, the request's fingerprint (JSON, written by labhop)."""
        return Layout(self.prefix).path("slurm_job")  # the probe looks for it too

    @property
    def endpoint(self) -> str:
        """Where the server answers: node, address, port (JSON, written by the job once it answers)."""
        return Layout(self.prefix).path("slurm_endpoint")  # rmate looks for it too

    @property
    def log_pattern(self) -> str:
        return posixpath.join(self.dir, "job-%j.log")

    def log(self, job_id: str) -> str:
        return posixpath.join(self.dir, f"job-{job_id}.log")


def render_config(server: ServerSettings) -> str:
    """labhop's server config, with address and port taken from the job's environment at start."""
    return render(server) + (
        "\n# Slurm: the launcher sets the node's address and the port it found free there.\n"
        "import os  # noqa: E402\n"
        f"c.ServerApp.ip = os.environ[{IP_ENV!r}]\n"
        f"c.NotebookApp.ip = os.environ[{IP_ENV!r}]\n"
        f"c.ServerApp.port = int(os.environ[{PORT_ENV!r}])\n"
        f"c.NotebookApp.port = int(os.environ[{PORT_ENV!r}])\n"
    )


def job_script(layout: Layout, request: SlurmRequest, *, home: str, root_dir: str, port: int, scheme: str) -> str:
    """The batch script (sbatch reads it on stdin): labhop's #SBATCH lines, the request's, the launcher."""
    slurm = SlurmLayout(layout.prefix)
    py = layout.venv_python
    argv = [py, "-c", source("slurm_launch.py"), slurm.endpoint, slurm.config_dir, root_dir, str(port),
            layout.venv_bin("jupyter"), scheme, posixpath.join(home, ".jupyter", "lab")]
    directives = [f"--job-name={JOB_NAME}", f"--output={slurm.log_pattern}", "--nodes=1", "--ntasks=1",
                  *request.directives()]
    lines = [
        "#!/bin/sh",
        "# Written by labhop (`fab serve --slurm`): JupyterLab on a compute node; `fab stop` cancels it.",
        *(f"#SBATCH {d}" for d in directives),
        "umask 077",
        # the venv's python runs here and finds JupyterLab (found, not imported: this check costs ~30 ms)
        f"if ! {shell.q(py)} -c {shell.q(VENV_CHECK)} >/dev/null 2>&1; then",
        f"    echo \"labhop: {py} cannot run JupyterLab on $(hostname): the compute nodes need the login "
        f"node's home directory (shared) and its CPU architecture\" >&2",
        f"    exit {NO_VENV_EXIT}",
        "fi",
        f"exec {shell.join(argv)}",
        "",
    ]
    return "\n".join(lines)


def scancel_argv(record: "JobRecord") -> list[str]:
    """scancel for labhop's job, on its cluster when sbatch named one (``ID;CLUSTER``: a multi-cluster site)."""
    return ["scancel", *(["--clusters", record.cluster] if record.cluster else []), record.id]


def sbatch_argv(request: SlurmRequest, *, test_only: bool = False) -> list[str]:
    return ["sbatch", "--parsable", *(["--test-only"] if test_only else []), *request.sbatch_args]


_JOB_ID = re.compile(r"^(?P<id>[0-9]+)(?:;(?P<cluster>[A-Za-z0-9_.-]+))?$")


def parse_sbatch(stdout: str) -> tuple[str, Optional[str]]:
    """``sbatch --parsable``: the last non-empty line is ``ID`` or ``ID;CLUSTER`` (site plugins may print before)."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    match = _JOB_ID.match(lines[-1]) if lines else None
    if not match:
        raise LabhopError(f"sbatch printed no job id: {lines[-1] if lines else 'nothing'}")
    return match.group("id"), match.group("cluster")


def fingerprint(script: str, argv: list[str], config: str, *, tls: str = "") -> str:
    """What makes a job the same one: the script, sbatch's argv, the server config it reads and, for a
    TLS server, its certificate's fingerprint (a new certificate is read only by a new server)."""
    digest = hashlib.sha256()
    for part in (script, "\0".join(argv), config, *([tls] if tls else [])):
        digest.update(part.encode())
        digest.update(b"\0\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Variant:
    """How the job's server lets people in: token (reached through `tunnel`) or password (``--public``)."""

    public: bool
    kept: bool = False  # public because the job's stored config is, not because this run asked
    https: bool = False  # (kept) that config served TLS: --insecure-http stays as it was


def choose_variant(*, public: bool, given_public: bool, localhost_asked: bool,
                   stored_config: Optional[str]) -> Variant:
    """As on a host (tasks/serving.py): what serve is not told does not change. A public job config stays
    public unless this run names the variant (``--public``, ``public`` in the inventory) or asks for the
    token variant with a loopback ``--ip``; it needs its stored password hash to stay."""
    if public:
        return Variant(public=True)
    stored = stored_server(stored_config)
    if (stored.public and not given_public and not localhost_asked
            and stored_secrets(stored_config).hashed_password):
        return Variant(public=True, kept=True, https=stored.tls)
    return Variant(public=False)


@dataclass(frozen=True)
class JobRecord:
    id: str
    cluster: Optional[str]
    fingerprint: str
    submitted: float
    log: str

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True) + "\n"

    @classmethod
    def from_data(cls, data: Any) -> Optional["JobRecord"]:
        if not isinstance(data, dict) or not str(data.get("id", "")).isdigit():
            return None
        return cls(id=str(data["id"]), cluster=data.get("cluster") or None,
                   fingerprint=str(data.get("fingerprint", "")),
                   submitted=float(data.get("submitted") or 0), log=str(data.get("log", "")))


@dataclass(frozen=True)
class Endpoint:
    job: str
    node: str
    host: str
    port: int
    scheme: str = "http"

    @classmethod
    def from_data(cls, data: Any) -> Optional["Endpoint"]:
        try:
            return cls(job=str(data["job"]), node=str(data["node"]), host=str(data["host"]), port=int(data["port"]),
                       scheme=str(data.get("scheme") or "http"))
        except (TypeError, KeyError, ValueError):
            return None


@dataclass(frozen=True)
class Query:
    """What the login node said about labhop's job (remote/slurm_query.py's one JSON line)."""

    now: str
    sbatch: Optional[str]
    dir_exists: bool
    record: Optional[JobRecord]
    endpoint: Optional[Endpoint]
    config: Optional[str]
    state: Optional[JobState]  # None: no job recorded

    @property
    def serving(self) -> Optional[Endpoint]:
        """The endpoint, when it is the recorded job's and that job runs."""
        if self.record and self.state and self.state.running and self.endpoint and self.endpoint.job == self.record.id:
            return self.endpoint
        return None


def query_args(prefix: str, job: Optional[JobRecord] = None) -> list[str]:
    """slurm_query.py's arguments: labhop's files about the job, squeue's format, and the job to ask about
    (default: the recorded one) with its cluster."""
    paths = SlurmLayout(prefix)
    return [paths.record, paths.endpoint, paths.config_file, FORMAT, *([job.id, job.cluster or ""] if job else [])]


def parse_answer(answer: Any, job: Optional[JobRecord] = None) -> Query:
    """slurm_query.py's output (text: its last line is the JSON; or that JSON already decoded) -> Query."""
    data = answer
    if isinstance(answer, str):
        try:
            data = json.loads(answer.strip().splitlines()[-1])
        except (ValueError, IndexError):
            data = None
    if not isinstance(data, dict):
        raise LabhopError(f"asking the login node about the Slurm job: unreadable answer {str(answer)[-200:]!r}")
    record = JobRecord.from_data(data.get("job"))
    state = None
    asked = job or record
    if asked is not None:
        sq = data.get("squeue")
        if not isinstance(sq, list) or len(sq) != 3:
            state = JobState(UNKNOWN, detail="no squeue on the login node")
        else:
            state = parse_squeue(asked.id, int(sq[0]), str(sq[1]), str(sq[2]))
    config = data.get("config")
    return Query(now=str(data.get("now", "")), sbatch=data.get("sbatch") or None, dir_exists=bool(data.get("dir")),
                 record=record, endpoint=Endpoint.from_data(data.get("endpoint")),
                 config=config if isinstance(config, str) else None, state=state)
