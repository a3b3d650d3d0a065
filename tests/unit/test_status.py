"""`status` and `url` wording (tasks/server.py): probe facts in, lines out."""
from __future__ import annotations

import json
from typing import Any

import pytest

from labhop.errors import LabhopError
from labhop.jupyter_config import ServerSettings, render
from labhop.server import status_lines, status_of, url_or_why
from labhop.target.probe import HostFacts, parse_facts

CONFIG = render(ServerSettings(ip="127.0.0.1", port=8890, root_dir="/home/ada", public=False, token="t0k"))
URL = "http://127.0.0.1:8890/lab?token=t0k"


def facts(**raw: Any) -> HostFacts:
    return parse_facts(json.dumps({"python": {"executable": "/usr/bin/python3", "version": [3, 11, 2]}, **raw}))


def test_running() -> None:
    st = status_of("gpu1", facts(config=CONFIG, server={"pid": 5120, "alive": True, "since": 1764626400}), "gpu1")
    assert status_lines(st) == ["running: pid 5120, port 8890, localhost, since 2025-12-01T22:00:00+00:00",
                                f"open: {URL}"]
    assert url_or_why(facts(config=CONFIG, server={"pid": 5120, "alive": True}), "gpu1") == URL


def test_died_behind_labhops_back() -> None:
    st = status_of("gpu1", facts(config=CONFIG, server={"pid": 5120, "alive": False}), "gpu1")
    assert status_lines(st) == ["not running: JupyterLab (pid 5120) died unexpectedly, its pid file is stale; "
                                "`fab serve` starts it again, `fab logs` shows its last lines"]


def test_stopped_and_never_served() -> None:
    assert status_lines(status_of("gpu1", facts(config=CONFIG), "gpu1")) == ["not running"]
    with pytest.raises(LabhopError) as stopped:
        url_or_why(facts(config=CONFIG), "gpu1")
    assert str(stopped.value) == f"JupyterLab is not running (it was at {URL}): `fab serve` starts it again"
    with pytest.raises(LabhopError, match=r"no server configured here yet: run `fab serve` first"):
        url_or_why(facts(), "gpu1")
