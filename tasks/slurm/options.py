"""What a user asks Slurm for: flags over the inventory's ``[hosts.NAME.slurm]`` table, validated.

Pure. Everything that can be checked before submitting is checked here (usage error, exit 2, one
line naming the flag or the inventory key); the rest is Slurm's to refuse (sbatch's own message).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from ..errors import UsageError

DEFAULT_WAIT = 600  # seconds a pending job may wait for its node before labhop cancels it

# inventory key -> TOML type; the flags have the same names (--partition, --time, ...).
SCHEMA: dict[str, type] = {
    "partition": str,
    "time": str,
    "account": str,
    "qos": str,
    "gpus": str,
    "cpus": int,
    "mem": str,
    "constraint": str,
    "sbatch_args": list,
    "wait": int,
}

_NAME = re.compile(r"^[A-Za-z0-9_.,+-]+$")
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.,&|\[\]*()!:-]+$")
_MEM = re.compile(r"^[0-9]+[KMGT]?$", re.IGNORECASE)
_GPUS = re.compile(r"^(?:[A-Za-z0-9_.-]+:)?([0-9]+)$")
_TIME_FORMS = (
    re.compile(r"^(?P<m>\d+)$"),
    re.compile(r"^(?P<m>\d+):(?P<s>\d+)$"),
    re.compile(r"^(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)$"),
    re.compile(r"^(?P<d>\d+)-(?P<h>\d+)$"),
    re.compile(r"^(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+)$"),
    re.compile(r"^(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)$"),
)
UNLIMITED = ("UNLIMITED", "INFINITE")
# sbatch options labhop sets itself: another value would break what labhop reads back.
_OWN = {"-o": "--output", "--output": "--output", "-e": "--error", "--error": "--error",
        "--parsable": "--parsable", "--wrap": "--wrap", "-J": "--job-name", "--job-name": "--job-name",
        "-a": "--array", "--array": "--array", "--test-only": "--test-only", "-W": "--wait", "--wait": "--wait"}


@dataclass(frozen=True)
class SlurmRequest:
    partition: Optional[str] = None
    time: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    gpus: Optional[str] = None
    cpus: Optional[int] = None
    mem: Optional[str] = None
    constraint: Optional[str] = None
    sbatch_args: tuple[str, ...] = ()
    wait: int = DEFAULT_WAIT

    @property
    def time_seconds(self) -> Optional[int]:
        return time_seconds(self.time) if self.time else None

    def directives(self) -> list[str]:
        """The ``#SBATCH`` options for what was asked (labhop's own come from the job script)."""
        out = []
        for key, option in (("partition", "--partition"), ("time", "--time"), ("account", "--account"),
                            ("qos", "--qos"), ("constraint", "--constraint")):
            value = getattr(self, key)
            if value:
                out.append(f"{option}={value}")
        if self.cpus:
            out.append(f"--cpus-per-task={self.cpus}")
        if self.mem:
            out.append(f"--mem={self.mem}")
        if self.gpus:
            out.append(f"--gres=gpu:{self.gpus}")
        return out


def time_seconds(value: str) -> Optional[int]:
    """A Slurm time limit in seconds (None: unlimited); ValueError when it is not one."""
    if value.upper() in UNLIMITED:
        return None
    for form in _TIME_FORMS:
        match = form.match(value)
        if match:
            parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
            return ((parts.get("d", 0) * 24 + parts.get("h", 0)) * 60 + parts.get("m", 0)) * 60 + parts.get("s", 0)
    raise ValueError(value)


def _check(key: str, value: Any, where: str) -> Any:
    """One validated value; ``where`` names its source for the error line."""
    def bad(why: str) -> UsageError:
        return UsageError(f"{where}: {why}")

    if key == "time":
        text = str(value).strip()
        try:
            seconds = time_seconds(text)
        except ValueError:
            raise bad(f"{text!r} is not a Slurm time limit (MINUTES, HH:MM:SS, D-HH:MM:SS or UNLIMITED)") from None
        if seconds == 0:
            raise bad("a time limit of 0 leaves no time to serve")
        return text
    if key in ("cpus", "wait"):
        try:
            number = int(str(value))
        except ValueError:
            raise bad(f"{value!r} is not a whole number") from None
        if number < 1:
            raise bad(f"{number} must be at least 1")
        return number
    if key == "mem":
        text = str(value).strip()
        if not _MEM.match(text):
            raise bad(f"{text!r} is not a memory size (a number with an optional K, M, G or T suffix)")
        return text
    if key == "gpus":
        text = str(value).strip()
        match = _GPUS.match(text)
        if not match or int(match.group(1)) < 1:
            raise bad(f"{text!r} is not a GPU count (N or TYPE:N, N >= 1)")
        return text
    if key == "constraint":
        text = str(value).strip()
        if not _CONSTRAINT.match(text):
            raise bad(f"{text!r} is not a Slurm constraint expression")
        return text
    if key == "sbatch_args":
        args = tuple(str(a) for a in value)
        for arg in args:
            if not arg.startswith("-") or "\n" in arg:
                raise bad(f"{arg!r} is not an sbatch option (each one starts with '-', e.g. --nodelist=node3)")
            name = arg.split("=", 1)[0]
            if name in _OWN:
                raise bad(f"{arg!r}: labhop sets {_OWN[name]} itself (its log and job script)")
        return args
    text = str(value).strip()
    if not _NAME.match(text):
        raise bad(f"{text!r} is not a valid {key} name")
    return text


def resolve_request(inventory: Optional[Mapping[str, Any]], flags: Mapping[str, Any], *,
                    table: str = "[hosts.NAME.slurm]") -> SlurmRequest:
    """Flags (``None`` = not given) over the inventory table, each value validated."""
    values: dict[str, Any] = {}
    for key, value in (inventory or {}).items():
        if key not in SCHEMA:
            raise UsageError(f"{table}: unknown key {key!r} (known: {', '.join(sorted(SCHEMA))})")
        values[key] = _check(key, value, f"{table} {key}")
    for key, value in flags.items():
        if key not in SCHEMA:
            raise ValueError(f"no Slurm option {key!r}")
        if value is None or value == "" or (key == "sbatch_args" and not value):
            continue
        values[key] = _check(key, value, "--" + key.replace("_", "-"))
    return SlurmRequest(**values)


def split_args(values: Sequence[str]) -> list[str]:
    """``--sbatch-arg`` may be given several times; each value may hold several space-separated options."""
    import shlex

    out: list[str] = []
    for value in values:
        out.extend(shlex.split(value))
    return out
