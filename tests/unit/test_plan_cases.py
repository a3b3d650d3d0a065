"""Table-driven plan tests: probe facts (as the probe prints them) in, ordered steps out.

Each JSON file under plan_cases/ is one case; see any of them for the format.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from labhop.errors import LabhopError
from labhop.jupyter_config import render
from labhop.plan import INSTALLED_MARK, plan_provision, plan_serve, server_settings
from labhop.target.probe import parse_facts
from labhop.settings import resolve_settings
from labhop.steps import Command, Skip, WriteFile

CASES = sorted((Path(__file__).parent / "plan_cases").glob("*.json"))
KINDS = {"command": Command, "write": WriteFile, "skip": Skip}


def build(case: dict):
    settings = resolve_settings(None, **case.get("settings", {}))
    facts_json = dict(case["facts"])
    venv = facts_json.get("venv") or {}
    if venv.get("installed") == "@complete":  # the mark a finished install step leaves
        facts_json["venv"] = {**venv, "installed": INSTALLED_MARK}
    if case["task"] == "provision":
        return lambda: plan_provision(parse_facts(json.dumps(facts_json)), settings), None
    probe_facts = parse_facts(json.dumps({**facts_json, "config": None}))
    server = server_settings(probe_facts, settings, token=case.get("token"), hashed_password=case.get("hash"))
    if facts_json.get("config") == "@rendered":
        facts_json["config"] = render(server)
    facts = parse_facts(json.dumps(facts_json))
    return lambda: plan_serve(facts, settings, server), server


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_plan_case(path: Path) -> None:
    case = json.loads(path.read_text())
    make_plan, server = build(case)
    if "error" in case:
        with pytest.raises(LabhopError) as excinfo:
            make_plan()
        assert str(excinfo.value) == case["error"]
        return
    plan = make_plan()
    # A skip is matched on its description and its reason together.
    got = [(type(step), f"{step.description}: {step.reason}" if isinstance(step, Skip) else step.description)
           for step in plan.steps]
    assert len(got) == len(case["expect"]), f"{case['about']}: {[d for _, d in got]}"
    for (kind, description), (want_kind, want_text) in zip(got, case["expect"]):
        assert kind is KINDS[want_kind], f"{description!r} should be a {want_kind}"
        assert want_text in description
    for warning in case.get("warnings", []):
        assert any(warning in w for w in plan.warnings), plan.warnings
    if not case.get("warnings"):
        assert plan.warnings == []
    written = [s for s in plan.steps if isinstance(s, WriteFile)]
    for snippet in case.get("config_contains", []):
        assert snippet in written[0].content
    for step in written:
        assert step.mode == 0o600
    for index, snippet in case.get("commands_contain", []):
        assert snippet in plan.steps[index].command


def test_cases_exist() -> None:
    assert len(CASES) >= 8
