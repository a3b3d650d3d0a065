from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest

from labhop.errors import UsageError
from labhop.passwords import hash_for, matches, read_password


def test_password_file_wins_and_loses_its_newline(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("from-file\n")
    assert read_password(str(f), environ={"LABHOP_PASSWORD": "from-env"}, interactive=False) == "from-file"


def test_env_then_prompt() -> None:
    assert read_password(None, environ={"LABHOP_PASSWORD": "from-env"}, interactive=False) == "from-env"
    answers = iter(["typed", "typed"])
    assert read_password(None, environ={}, interactive=True, prompt=lambda _: next(answers)) == "typed"


def test_prompt_mismatch() -> None:
    answers = iter(["one", "two"])
    with pytest.raises(UsageError, match="differ"):
        read_password(None, environ={}, interactive=True, prompt=lambda _: next(answers))


def test_no_source_without_a_terminal() -> None:
    with pytest.raises(UsageError, match="--password-file FILE or set \\$LABHOP_PASSWORD"):
        read_password(None, environ={}, interactive=False)


def test_too_long_for_bcrypt_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match="longer than bcrypt's 72 bytes"):
        read_password(None, environ={"LABHOP_PASSWORD": "é" * 37}, interactive=False)


def test_missing_password_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--password-file .*nope"):
        read_password(str(tmp_path / "nope"), environ={}, interactive=False)


def test_stored_hash_is_reused_only_when_it_matches() -> None:
    stored = bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode()
    assert hash_for("right", stored) == stored
    fresh = hash_for("other", stored)
    assert fresh != stored and matches("other", fresh) and not matches("right", fresh)
    assert not matches("right", None)
    assert not matches("right", "sha1:abc:def")
