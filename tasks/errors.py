"""Domain errors. The CLI edge turns them into one line and a non-zero exit."""
from __future__ import annotations

# Exit codes are part of the CLI contract (see README "Exit codes").
EXIT_FAILED = 1
EXIT_USAGE = 2


class LabhopError(Exception):
    """Something went wrong on a host or in the environment (exit 1)."""

    exit_code = EXIT_FAILED


class UsageError(LabhopError):
    """The user asked for something invalid: bad flag, bad inventory (exit 2)."""

    exit_code = EXIT_USAGE
