"""Where labhop keeps its files on a target, below one prefix directory it owns."""
from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass

DEFAULT_PREFIX = "~/.labhop"
DEFAULT_BIN_DIR = "~/.local/bin"


@dataclass(frozen=True)
class Layout:
    """Absolute paths on the target, derived from the resolved prefix."""

    prefix: str

    @property
    def venv(self) -> str:
        return posixpath.join(self.prefix, "venv")

    @property
    def venv_python(self) -> str:
        return posixpath.join(self.venv, "bin", "python")

    def venv_bin(self, name: str) -> str:
        return posixpath.join(self.venv, "bin", name)

    @property
    def config_dir(self) -> str:
        # Used as JUPYTER_CONFIG_DIR: the user's ~/.jupyter server config is never read
        # (old NotebookApp.* settings there would override ours through notebook_shim).
        return posixpath.join(self.prefix, "jupyter")

    @property
    def config_file(self) -> str:
        return posixpath.join(self.config_dir, "jupyter_server_config.py")

    @property
    def log_file(self) -> str:
        return posixpath.join(self.prefix, "server.log")

    @property
    def pid_file(self) -> str:
        return posixpath.join(self.prefix, "server.pid")

    @property
    def lock_file(self) -> str:
        return posixpath.join(self.prefix, "lock")

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
