"""What one task did on one host, and how a run over many hosts is summarised.

Pure: the fleet executor (tasks/fleet.py) collects ``HostResult``s; this module
turns them into the summary table, the ``--json`` document and the exit code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from .errors import EXIT_FAILED, EXIT_USAGE

EXIT_INTERRUPTED = 130
JSON_SCHEMA = 1  # bump when a key of the --json document changes meaning

# Result words (the RESULT column and "result" in --json).
CHANGED = "changed"
UNCHANGED = "unchanged"
WOULD_CHANGE = "would change"
FAILED = "failed"
SKIPPED = "skipped"

_CORE_KEYS = ("host", "task", "ok", "result", "changed", "unchanged", "dry_run", "seconds", "error", "exit_code")


@dataclass
class HostResult:
    """One task on one host. ``data`` holds task-specific keys (serve: url; status: running, pid...)."""

    host: str
    task: str
    ok: bool = True
    result: str = UNCHANGED
    changed: list[str] = field(default_factory=list)  # descriptions of the steps that changed (or would)
    unchanged: int = 0
    dry_run: bool = False
    seconds: float = 0.0
    error: Optional[str] = None
    exit_code: int = 0
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        clash = set(self.data) & set(_CORE_KEYS)
        assert not clash, f"task data may not reuse core keys: {sorted(clash)}"
        core = {k: getattr(self, k) for k in _CORE_KEYS}
        core["seconds"] = round(self.seconds, 3)
        return {**core, **self.data}


def applied(host: str, task: str, changed: list[str], unchanged: int, *, dry_run: bool = False,
            seconds: float = 0.0, **data: Any) -> HostResult:
    """The result of applying a plan: changed / unchanged / would change."""
    if not changed:
        word = UNCHANGED
    else:
        word = WOULD_CHANGE if dry_run else CHANGED
    return HostResult(host=host, task=task, result=word, changed=list(changed), unchanged=unchanged,
                      dry_run=dry_run, seconds=seconds, data=dict(data))


def observed(task: str, facts: dict[str, Any]) -> HostResult:
    """A read-only task (status): its facts as data; RESULT says running / not running."""
    data = {k: v for k, v in facts.items() if k not in _CORE_KEYS}
    word = "running" if data.get("running") else "not running"
    return HostResult(host=str(facts.get("host", "")), task=task, result=word, data=data)


def failed(host: str, task: str, error: str, exit_code: int = EXIT_FAILED, *, seconds: float = 0.0) -> HostResult:
    return HostResult(host=host, task=task, ok=False, result=FAILED, error=one_line(error),
                      exit_code=exit_code or EXIT_FAILED, seconds=seconds)


def skipped(host: str, task: str, why: str) -> HostResult:
    """Not attempted because an earlier task failed on this host (counts as not ok)."""
    return HostResult(host=host, task=task, ok=False, result=SKIPPED, error=one_line(why), exit_code=EXIT_FAILED)


def one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return " | ".join(lines) if lines else "failed"


def exit_code(results: Iterable[HostResult]) -> int:
    """0 when every host succeeded; 2 when every failure was a usage error; 130 if interrupted; else 1.

    Skipped results follow from an earlier failure and do not decide the code.
    """
    codes = {r.exit_code for r in results if not r.ok and r.result != SKIPPED}
    if not codes:
        return 0
    if EXIT_INTERRUPTED in codes:
        return EXIT_INTERRUPTED
    if codes == {EXIT_USAGE}:
        return EXIT_USAGE
    return EXIT_FAILED


def document(results: list[HostResult], *, seconds: Optional[float] = None) -> dict[str, Any]:
    """The one JSON document of a ``--json`` run: overall verdict, then one entry per host and task."""
    code = exit_code(results)
    doc: dict[str, Any] = {"schema": JSON_SCHEMA, "ok": code == 0, "exit_code": code,
                           "results": [r.as_dict() for r in results]}
    if seconds is not None:
        doc["seconds"] = round(seconds, 3)
    return doc


def summary_table(results: list[HostResult], *, width: int = 100) -> str:
    """Host, task, result, time, what changed (or why it failed): one row each, aligned."""
    rows = [("HOST", "TASK", "RESULT", "TIME", "WHAT CHANGED / ERROR")]
    for r in results:
        rows.append((r.host, r.task, r.result.upper() if not r.ok else r.result, f"{r.seconds:.1f}s", _detail(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        head = "  ".join(cell.rjust(w) if i == 3 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        room = max(width - len(head) - 2, 20)
        failure = row[2].isupper() and row is not rows[0]  # errors are shown whole: they are the point
        lines.append(f"{head}  {row[4] if failure else _shorten(row[4], room)}".rstrip())
    return "\n".join(lines)


def headline(results: list[HostResult], seconds: float) -> str:
    hosts = sorted({r.host for r in results})
    bad = sorted({r.host for r in results if not r.ok})
    tasks = list(dict.fromkeys(r.task for r in results))
    verdict = f"{len(hosts) - len(bad)} ok, {len(bad)} failed" if bad else "all ok"
    return f"labhop: {' '.join(tasks)} on {len(hosts)} host(s): {verdict} ({seconds:.1f}s)"


def _detail(r: HostResult) -> str:
    if not r.ok:
        return r.error or r.result
    if r.changed:
        count = f"{len(r.changed)} steps: " if len(r.changed) > 1 else ""
        return count + "; ".join(r.changed)
    if "running" in r.data:  # status
        return f"running, pid {r.data.get('pid')}, port {r.data.get('port')}" if r.data["running"] else "not running"
    return "-"


def _shorten(text: str, room: int) -> str:
    return text if len(text) <= room else text[: room - 3] + "..."
