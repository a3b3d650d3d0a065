"""POSIX shell snippets built with shlex.quote only: never by pasting strings."""
from __future__ import annotations

import posixpath
import shlex
from typing import Iterable, Optional


def q(value: object) -> str:
    return shlex.quote(str(value))


def join(argv: Iterable[object]) -> str:
    return " ".join(q(a) for a in argv)


def atomic_write(path: str, mode: int, size: Optional[int] = None) -> str:
    """Read stdin into ``path`` atomically: temp file in the same dir, chmod, rename.

    A missing parent directory is created 0700 (umask); an existing one is left as it is:
    the parent of ``~/.rmate.rc`` is the user's home, whose mode is not labhop's to change.
    A kill at any point leaves either the old file or the new one, never half of one.
    ``size`` (bytes): when the writer dies mid-payload its channel closes, which ``cat`` cannot tell from the end of the
    payload, so a short temp file is dropped instead of renamed into place. A failed
    write (disk full) removes its temp file; temp files of killed runs go on the next.
    """
    directory = posixpath.dirname(path)
    stem = q(f"{path}.labhop-tmp")
    tmp = f"{stem}.$$"
    complete = f" && [ $(wc -c < {tmp}) -eq {int(size)} ]" if size is not None else ""
    return (
        f"umask 077 && mkdir -p {q(directory)} && rm -f {stem}.* && "
        f"{{ cat > {tmp}{complete} && chmod {mode:o} {tmp} && mv -f {tmp} {q(path)} || {{ rm -f {tmp}; exit 1; }}; }}"
    )


def mkdir_private(path: str) -> str:
    return f"umask 077 && mkdir -p {q(path)} && chmod 700 {q(path)}"
