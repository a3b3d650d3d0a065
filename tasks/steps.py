"""The vocabulary of plans: every plan is an ordered list of these steps."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union


@dataclass(frozen=True)
class Command:
    """A shell command to run on the target.

    ``stdin`` feeds data that must never appear in an argv (secrets, file bodies).
    """

    description: str
    command: str
    stdin: Optional[str] = None
    # The last line the command prints completes its line in the report (what it found it had to
    # do on the target, e.g. which installer ran).
    note: bool = False


@dataclass(frozen=True)
class WriteFile:
    """Write ``content`` to ``path`` atomically with ``mode`` (content travels on stdin)."""

    description: str
    path: str
    content: str
    mode: int = 0o600


@dataclass(frozen=True)
class Skip:
    """A step that is not needed, with the reason (reported, never run)."""

    description: str
    reason: str


@dataclass(frozen=True)
class Transfer:
    """One file for the target: the controller files ``sources`` one after another (one stream:
    SFTP pays a round trip per file); ``offset`` bytes of it are already there (resume)."""

    sources: tuple[str, ...]  # paths on the controller
    dest: str  # path on the target
    size: int
    offset: int = 0


@dataclass(frozen=True)
class Upload:
    """Copy binary files to the target: SFTP over the same connection (a plain copy for local runs).

    Never through a command's stdin (invoke's in_stream is text). The directory is
    created 0700; files already partly there are appended to, not resent.
    """

    description: str
    directory: str
    files: tuple[Transfer, ...] = ()

    @property
    def size(self) -> int:
        return sum(f.size - f.offset for f in self.files)


Step = Union[Command, WriteFile, Upload, Skip]

