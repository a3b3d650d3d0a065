"""Run one `fab` command in this process and print where its time went, as JSON on stderr's last line.

    python bench/phases.py -r REPO -S ssh_config -H target provision

Wraps (when present) the steps a task goes through: connecting the SSH chain, taking the
target's lock and probing (one command for provision/serve/stop), probing alone (other tasks),
applying. Used by bench/noop_provision.py; not a labhop feature.
"""
from __future__ import annotations

import contextlib
import json
import sys
import time

T0 = time.perf_counter()
marks: dict[str, float] = {}

import fabric.main  # noqa: E402

marks["import fabric"] = time.perf_counter() - T0


def _wrap(module, name: str, label: str) -> None:
    func = getattr(module, name, None)
    if func is None:
        return

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            marks[label] = marks.get(label, 0.0) + time.perf_counter() - started

    setattr(module, name, timed)


def _wrap_lock(module) -> None:
    hold = getattr(module, "hold_lock", None)
    if hold is None:
        return

    @contextlib.contextmanager
    def timed(*args, **kwargs):
        started = time.perf_counter()
        with hold(*args, **kwargs) as value:
            marks["lock"] = time.perf_counter() - started
            yield value

    module.hold_lock = timed


def main() -> None:
    sys.path.insert(0, sys.argv[sys.argv.index("-r") + 1])
    started = time.perf_counter()
    import fabfile  # noqa: E402,F401  (all of labhop's modules; fab's loader then reuses them)
    import labhop.cli as cli  # noqa: E402
    import labhop.executor as executor  # noqa: E402

    marks["import labhop"] = time.perf_counter() - started
    _wrap(cli, "open_chain", "connect")
    _wrap_lock(cli)
    _wrap(executor, "probe", "probe")
    _wrap(cli, "apply", "apply")
    code = 0
    try:
        fabric.main.program.run(["fab", *sys.argv[1:]])
    except SystemExit as exc:
        code = exc.code or 0
    marks["total"] = time.perf_counter() - T0
    print(json.dumps(marks), file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
