"""Where labhop keeps its files on a target, below one prefix directory it owns.

The one definition of every path and marker labhop uses there: the plan, certs, the offline
install and the probe (tasks/remote/probe.py, which gets ``PATHS`` and the profile markers as its
argument) all take them from here.
"""
from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass

DEFAULT_PREFIX = "~/.labhop"
DEFAULT_BIN_DIR = "~/.local/bin"

# Below the prefix, by name.
PATHS = {
    "venv": "venv",
    "venv_python": "venv/bin/python",
    "venv_cfg": "venv/pyvenv.cfg",
    "venv_rmate": "venv/bin/rmate",
    # Written last by the venv / install steps (tasks/plan.py): a run killed half-way leaves none.
    "venv_mark": "venv/.labhop-venv-complete",
    "install_mark": "venv/.labhop-installed",
    "config_dir": "jupyter",
    "config_file": "jupyter/jupyter_server_config.py",
    "log_file": "server.log",
    "pid_file": "server.pid",
    "lock_file": "lock",
    "tls_cert": "tls/cert.pem",  # the public variant's pair (tasks/certs.py)
    "tls_key": "tls/key.pem",
    "wheelhouse": "wheelhouse",  # pushed wheels of an offline install (tasks/offline/install.py)
    "own_uv": "bin/uv",  # uv unpacked from its wheel; the probe prefers it to one on PATH
    "slurm_job": "slurm/job.json",  # what serve --slurm submitted (tasks/slurm/job.py SlurmLayout.record)
    "slurm_endpoint": "slurm/endpoint.json",  # where the job's server answers, while it does (written by the job)
    # The user's environments as kernels (tasks/kernels.py): first on the server's JUPYTER_PATH.
    "data_dir": "share/jupyter",
    "kernels_dir": "share/jupyter/kernels",
}

# The block labhop appends to a login profile to put bin_dir on PATH, and the profiles it looks at
# (in the order a login shell reads them).
PROFILE_BEGIN = "# >>> labhop >>>"
PROFILE_END = "# <<< labhop <<<"
PROFILES = (".bash_profile", ".bash_login", ".profile", ".zprofile")
# In bin_dir: the link to the venv's rmate (PATHS["venv_rmate"]).
RMATE_LINK = "rmate"


@dataclass(frozen=True)
class Layout:
    """Absolute paths on the target, derived from the resolved prefix."""

    prefix: str

    def path(self, name: str) -> str:
        """``PATHS[name]`` below this prefix."""
        return posixpath.join(self.prefix, PATHS[name])

    @property
    def venv(self) -> str:
        return self.path("venv")

    @property
    def venv_python(self) -> str:
        return self.path("venv_python")

    def venv_bin(self, name: str) -> str:
        return posixpath.join(self.venv, "bin", name)

    @property
    def venv_mark(self) -> str:
        return self.path("venv_mark")

    @property
    def install_mark(self) -> str:
        return self.path("install_mark")

    @property
    def config_dir(self) -> str:
        # Used as JUPYTER_CONFIG_DIR: the user's ~/.jupyter server config is never read
        # (old NotebookApp.* settings there would override ours through notebook_shim).
        return self.path("config_dir")

    @property
    def config_file(self) -> str:
        return self.path("config_file")

    @property
    def log_file(self) -> str:
        return self.path("log_file")

    @property
    def pid_file(self) -> str:
        return self.path("pid_file")

    @property
    def lock_file(self) -> str:
        return self.path("lock_file")

    @property
    def tls_cert(self) -> str:
        return self.path("tls_cert")

    @property
    def tls_key(self) -> str:
        return self.path("tls_key")

    @property
    def wheelhouse(self) -> str:
        return self.path("wheelhouse")

    @property
    def own_uv(self) -> str:
        return self.path("own_uv")

    @property
    def session_name(self) -> str:
        """A tmux session name unique per prefix, so several prefixes can coexist."""
        digest = hashlib.sha256(self.prefix.encode()).hexdigest()[:8]
        return f"labhop-{digest}"


def expand_home(path: str, home: str) -> str:
    """Expand a leading ``~`` against the target's HOME (never the controller's)."""
    if path == "~":
        return home
    if path.startswith("~/"):
        return posixpath.join(home, path[2:])
    return path
