"""What labhop tells the user. Human text; never a secret (URLs with tokens only where asked)."""
from __future__ import annotations

import sys
from typing import TextIO

from .executor import ApplyResult, StepResult
from .steps import Skip


class Reporter:
    def __init__(self, host: str, stream: TextIO = sys.stdout, *, dry_run: bool = False) -> None:
        self.host = host
        self.stream = stream
        self.dry_run = dry_run

    def say(self, text: str) -> None:
        print(f"[{self.host}] {text}", file=self.stream, flush=True)

    def warn(self, text: str) -> None:
        print(f"[{self.host}] warning: {text}", file=sys.stderr, flush=True)

    def step(self, result: StepResult) -> None:
        step = result.step
        if isinstance(step, Skip):
            self.say(f"  ok       {step.description}: {step.reason}")
        elif self.dry_run:
            self.say(f"  would    {step.description}")
        else:
            self.say(f"  changed  {step.description} ({result.seconds:.1f}s)")

    def summary(self, task: str, outcome: ApplyResult) -> None:
        changed = len(outcome.changed)
        unchanged = len(outcome.results) - changed
        if self.dry_run:
            self.say(f"{task}: dry run, {changed} step(s) would change, {unchanged} already in place; nothing was changed")
        elif changed == 0:
            self.say(f"{task}: nothing to do, all {unchanged} step(s) already in place ({outcome.seconds:.1f}s)")
        else:
            self.say(f"{task}: {changed} changed, {unchanged} unchanged ({outcome.seconds:.1f}s)")
