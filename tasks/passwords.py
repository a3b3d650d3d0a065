"""Where the password comes from, and its bcrypt hash (made on the controller).

The password and its hash never reach an argv, a log or the output.
"""
from __future__ import annotations

import getpass
import os
import sys
import threading
from pathlib import Path
from typing import Callable, Optional

import bcrypt

from .errors import UsageError

PASSWORD_ENV = "LABHOP_PASSWORD"
BCRYPT_MAX_BYTES = 72
BCRYPT_ROUNDS = 12

# A fleet run (fab -H a,b,c serve --public) asks once and uses the answer for every host.
_PROMPT_LOCK = threading.Lock()
_prompted: dict[Callable[[str], str], str] = {}


def check_password(password: str, origin: str) -> str:
    if not password:
        raise UsageError(f"the password from {origin} is empty")
    if len(password.encode("utf-8")) > BCRYPT_MAX_BYTES:
        raise UsageError(f"the password from {origin} is longer than bcrypt's {BCRYPT_MAX_BYTES} bytes; "
                         "choose a shorter one")
    return password


def read_password(password_file: Optional[str], *, environ: Optional[dict[str, str]] = None,
                  interactive: Optional[bool] = None,
                  prompt: Callable[[str], str] = getpass.getpass) -> str:
    """``--password-file``, then ``$LABHOP_PASSWORD``, then a prompt (asked twice) on a TTY."""
    env = os.environ if environ is None else environ
    if password_file:
        path = Path(password_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--password-file {password_file}: {exc.strerror or exc}") from None
        return check_password(text.rstrip("\r\n"), f"--password-file {password_file}")
    if env.get(PASSWORD_ENV):
        return check_password(env[PASSWORD_ENV], f"${PASSWORD_ENV}")
    tty = sys.stdin.isatty() if interactive is None else interactive
    if not tty:
        raise UsageError(f"a password is required: use --password-file FILE or set ${PASSWORD_ENV} "
                         "(no terminal to prompt on)")
    with _PROMPT_LOCK:
        if prompt not in _prompted:
            first = prompt("labhop password for the public server: ")
            second = prompt("again: ")
            if first != second:
                raise UsageError("the two passwords differ")
            _prompted[prompt] = check_password(first, "the prompt")
        return _prompted[prompt]


def matches(password: str, hashed: Optional[str]) -> bool:
    """Does ``password`` match a stored bcrypt hash? (Never compare fresh salted hashes.)"""
    if not hashed or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
        return False
    try:
        return bcrypt.checkpw(password.encode("utf-8"), hashed.encode("ascii"))
    except ValueError:
        return False


def hash_for(password: str, stored: Optional[str]) -> str:
    """The stored hash when it still matches (keeps the config byte-identical), else a new one."""
    if matches(password, stored):
        return stored  # type: ignore[return-value]
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(BCRYPT_ROUNDS)).decode("ascii")
