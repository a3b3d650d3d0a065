"""Table-driven plan tests: probe facts (as the probe prints them) in, ordered steps out.

Each JSON file under plan_cases/ is one case; see any of them for the format. ``expect`` lists
every step exactly: ``[kind, description]``, and for a skip ``["skip", description, reason]``.

- ``task``: provision, serve or stop.
- ``wheelhouse`` (provision/serve): the controller's wheels for the target (an offline install),
  ``{"key", "directory", "wheels": [[file, size, sha256]], "uv_wheel"}``.
- ``tls`` (serve): ``{"mode": "self-signed" | "insecure", "names": [...], "on_target": "@valid"}``;
  ``@valid``: the target already holds a certificate made for those names, with its key.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from labhop import certs
from labhop.errors import LabhopError
from labhop.jupyter_config import ServerSettings, render
from labhop.offline.wheelhouse import Manifest, Wheel
from labhop.packages import INSTALLED_MARK
from labhop.plan import Plan, plan_provision, plan_serve, plan_stop, server_settings
from labhop.settings import resolve_settings
from labhop.steps import Command, Skip, Step, Upload, WriteFile
from labhop.target.probe import parse_facts

CASES = sorted((Path(__file__).parent / "plan_cases").glob("*.json"))
KINDS: dict[type, str] = {Command: "command", WriteFile: "write", Skip: "skip", Upload: "upload"}


def manifest(raw: Optional[dict[str, Any]]) -> Optional[Manifest]:
    if raw is None:
        return None
    wheels = tuple(Wheel(name, size, sha) for name, size, sha in raw["wheels"])
    return Manifest(key=raw["key"], directory=raw["directory"], requirements=tuple(raw.get("requirements", ())),
                    wheels=wheels, uv_wheel=raw.get("uv_wheel"))


def with_certificate(facts_json: dict[str, Any], names: list[str]) -> None:
    """A certificate labhop made earlier for ``names`` (and the host's probed names), with its key."""
    wanted = certs.wanted_names([*names, facts_json.get("hostname"), facts_json.get("ssh_address")])
    cert_pem, key_pem = certs.generate(wanted)
    facts_json["tls"] = {"cert": cert_pem, "key_sha256": hashlib.sha256(key_pem.encode("ascii")).hexdigest(),
                         "pair_ok": True}


def build(case: dict[str, Any]) -> tuple[Callable[[], Plan], Optional[ServerSettings], certs.TlsPlan]:
    settings = resolve_settings(None, **case.get("settings", {}))
    facts_json = dict(case["facts"])
    venv = facts_json.get("venv") or {}
    if venv.get("installed") == "@complete":  # the mark a finished install step leaves
        facts_json["venv"] = {**venv, "installed": INSTALLED_MARK}
    wheelhouse = manifest(case.get("wheelhouse"))
    tls = certs.TlsPlan()
    if case["task"] == "provision":
        return lambda: plan_provision(parse_facts(json.dumps(facts_json)), settings, wheelhouse), None, tls
    if case["task"] == "stop":
        return lambda: plan_stop(parse_facts(json.dumps(facts_json))), None, tls
    if "tls" in case:
        if case["tls"].get("on_target") == "@valid":
            with_certificate(facts_json, case["tls"]["names"])
        request = certs.TlsRequest(case["tls"]["mode"])
        tls = certs.plan_serve_tls(request, parse_facts(json.dumps({**facts_json, "config": None})),
                                   case["tls"]["names"])
    probe_facts = parse_facts(json.dumps({**facts_json, "config": None}))
    server = server_settings(probe_facts, settings, token=case.get("token"), hashed_password=case.get("hash"),
                             certfile=tls.certfile, keyfile=tls.keyfile)
    if facts_json.get("config") == "@rendered":
        facts_json["config"] = render(server)
    facts = parse_facts(json.dumps(facts_json))
    return lambda: plan_serve(facts, settings, server, files=tls.steps, wheelhouse=wheelhouse), server, tls


def described(step: Step) -> list[str]:
    return [KINDS[type(step)], step.description, *([step.reason] if isinstance(step, Skip) else [])]


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_plan_case(path: Path) -> None:
    case = json.loads(path.read_text())
    make_plan, server, tls = build(case)
    if "error" in case:
        with pytest.raises(LabhopError) as excinfo:
            make_plan()
        assert str(excinfo.value) == case["error"]
        return
    plan = make_plan()
    assert [described(step) for step in plan.steps] == case["expect"], case["about"]
    warnings = plan.warnings + tls.warnings  # serve reports the TLS plan's warnings beside the plan's
    for warning in case.get("warnings", []):
        assert any(warning in w for w in warnings), warnings
    if not case.get("warnings"):
        assert warnings == []
    written = [s for s in plan.steps if isinstance(s, WriteFile)]
    configs = [s for s in written if s.path.endswith("jupyter_server_config.py")]
    for snippet in case.get("config_contains", []):
        assert snippet in configs[0].content
    for step in written:
        assert step.mode == (0o644 if step.path.endswith("cert.pem") else 0o600), step.path
    for index, snippet in case.get("commands_contain", []):
        step = plan.steps[index]
        assert isinstance(step, Command) and snippet in step.command


def test_cases_cover_every_task_offline_and_tls() -> None:
    cases = [json.loads(path.read_text()) for path in CASES]
    assert {case["task"] for case in cases} == {"provision", "serve", "stop"}
    assert any("wheelhouse" in case for case in cases) and any("tls" in case for case in cases)
