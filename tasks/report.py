"""What labhop tells the user. Human text; never a secret (URLs with tokens only where asked)."""
from __future__ import annotations

import sys
from typing import Optional, TextIO

from .executor import ApplyResult, StepResult
from .steps import Skip


class Reporter:
    def __init__(self, host: str, stream: Optional[TextIO] = None, *, dry_run: bool = False) -> None:
        self.host = host
        self._stream = stream
        self.dry_run = dry_run

    @property
    def stream(self) -> TextIO:
        # Looked up when writing: the fleet executor swaps sys.stdout while hosts run at once.
        return self._stream or sys.stdout

    def say(self, text: str) -> None:
        _line(self.stream, f"[{self.host}] {text}")

    def warn(self, text: str) -> None:
        _line(sys.stderr, f"[{self.host}] warning: {text}")

    def step(self, result: StepResult) -> None:
        step = result.step
        if isinstance(step, Skip):
            self.say(f"  ok       {step.description}: {step.reason}")
        elif self.dry_run:
            self.say(f"  would    {step.description}")
        else:
            note = f" {result.note}" if result.note else ""
            self.say(f"  changed  {step.description}{note} ({result.seconds:.1f}s)")

    def summary(self, task: str, outcome: ApplyResult) -> None:
        changed = len(outcome.changed)
        unchanged = len(outcome.results) - changed
        if self.dry_run:
            self.say(f"{task}: dry run, {changed} step(s) would change, {unchanged} already in place; "
                     "nothing was changed")
        elif changed == 0:
            self.say(f"{task}: nothing to do, all {unchanged} step(s) already in place ({outcome.seconds:.1f}s)")
        else:
            self.say(f"{task}: {changed} changed, {unchanged} unchanged ({outcome.seconds:.1f}s)")


def _line(stream: TextIO, text: str) -> None:
    """One write per line: lines from hosts running at once never interleave mid-line."""
    stream.write(text + "\n")
    stream.flush()
