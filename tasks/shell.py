"""POSIX shell snippets built with shlex.quote only: never by pasting strings."""
from __future__ import annotations

import posixpath
import shlex
from typing import Iterable


def q(value: object) -> str:
    return shlex.quote(str(value))


def join(argv: Iterable[object]) -> str:
    return " ".join(q(a) for a in argv)


def atomic_write(path: str, mode: int) -> str:
    """Read stdin into ``path`` atomically: temp file in the same dir, chmod, rename.

    The parent directory is created 0700. A kill at any point leaves either the
    old file or the new one, never half of one.
    """
    directory = posixpath.dirname(path)
    tmp = f"{path}.labhop-tmp"
    return (
        f"umask 077 && mkdir -p {q(directory)} && chmod 700 {q(directory)} && "
        f"cat > {q(tmp)}.$$ && chmod {mode:o} {q(tmp)}.$$ && mv -f {q(tmp)}.$$ {q(path)}"
    )


def mkdir_private(path: str) -> str:
    return f"umask 077 && mkdir -p {q(path)} && chmod 700 {q(path)}"
