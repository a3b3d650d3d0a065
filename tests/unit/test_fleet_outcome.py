"""Pure layer of fleet runs: results, summary table, --json document, exit codes, @group expansion."""
from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest

from labhop.errors import UsageError
from labhop.fleet import _HostLines, _current, expand_hosts, parallel_limit
from labhop.inventory import parse_inventory
from labhop.outcome import (applied, document, exit_code, failed, headline, observed, skipped,
                           summary_table)

INVENTORY = parse_inventory("""
[hosts.a]
hostname = "10.0.0.1"
[groups]
gpu = ["a", "b", "c"]
cpu = ["c", "d"]
""", Path("inv.toml"))


def test_applied_words() -> None:
    assert applied("h", "provision", [], 4).result == "unchanged"
    assert applied("h", "provision", ["create venv"], 3).result == "changed"
    dry = applied("h", "provision", ["create venv"], 3, dry_run=True)
    assert dry.result == "would change" and dry.dry_run and dry.ok


@pytest.mark.parametrize("codes, expected", [
    ([], 0),
    ([1], 1),
    ([2, 2], 2),
    ([2, 1], 1),
    ([1, 130], 130),
])
def test_exit_code(codes: list[int], expected: int) -> None:
    results = [applied("ok", "provision", [], 1)]
    results += [failed(f"h{i}", "provision", "boom", code) for i, code in enumerate(codes)]
    assert exit_code(results) == expected


def test_skipped_does_not_decide_the_code() -> None:
    results = [failed("a", "provision", "bad --port", 2), skipped("a", "serve", "an earlier task failed")]
    assert exit_code(results) == 2
    assert not results[1].ok


def test_document_is_json_with_per_host_entries() -> None:
    results = [applied("a", "serve", ["start JupyterLab"], 5, seconds=1.23456, url="http://127.0.0.1:8888/lab"),
               failed("b", "serve", "connection refused\n  (traceback-ish second line)")]
    doc = json.loads(json.dumps(document(results, seconds=2.5)))
    assert doc["ok"] is False and doc["exit_code"] == 1 and doc["schema"] == 1
    a, b = doc["results"]
    assert a == {"host": "a", "task": "serve", "ok": True, "result": "changed", "changed": ["start JupyterLab"],
                 "unchanged": 5, "dry_run": False, "seconds": 1.235, "error": None, "exit_code": 0,
                 "url": "http://127.0.0.1:8888/lab"}
    assert b["error"] == "connection refused | (traceback-ish second line)" and b["result"] == "failed"


def test_task_data_cannot_shadow_core_keys() -> None:
    with pytest.raises(AssertionError):
        applied("a", "serve", [], 1, ok=False).as_dict()


def test_observed_status() -> None:
    up = observed("status", {"host": "a", "running": True, "pid": 42, "port": 8888})
    assert (up.host, up.result, up.data) == ("a", "running", {"running": True, "pid": 42, "port": 8888})
    assert observed("status", {"host": "b", "running": False}).result == "not running"


def test_summary_table_rows_and_errors_whole() -> None:
    long_error = "cannot resolve host name (Name or service not known); is it in inventory.toml or ssh_config?"
    table = summary_table([
        applied("alpha", "provision", ["create /p (0700)", "install jupyterlab"], 2, seconds=41.2),
        applied("beta", "provision", [], 5, seconds=0.4),
        failed("gamma.example.org", "provision", long_error),
    ], width=60).splitlines()
    assert table[0].split() == ["HOST", "TASK", "RESULT", "TIME", "WHAT", "CHANGED", "/", "ERROR"]
    assert table[1].startswith("alpha ") and "changed" in table[1] and "41.2s" in table[1]
    assert table[1].endswith("...") or "install jupyterlab" in table[1]
    assert table[2].split()[2:] == ["unchanged", "0.4s", "-"]
    assert "FAILED" in table[3] and table[3].endswith(long_error)
    # columns line up
    assert len({line.index("provision") for line in table[1:]}) == 1


def test_headline() -> None:
    results = [applied("a", "stop", [], 1), failed("b", "stop", "x"), skipped("b", "serve", "y")]
    assert headline(results, 3.0) == "labhop: stop serve on 2 host(s): 1 ok, 1 failed (3.0s)"


def test_expand_groups_in_order_without_repeats() -> None:
    assert expand_hosts(["a", "@gpu", "@cpu", "e"], INVENTORY) == ["a", "b", "c", "d", "e"]
    assert expand_hosts([{"host": "x"}], INVENTORY) == [{"host": "x"}]


def test_unknown_group_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"inv.toml: no group 'gpus' \(known: cpu, gpu\)"):
        expand_hosts(["@gpus"], INVENTORY)


@pytest.mark.parametrize("env, config, expected", [
    ({}, {}, 8),
    ({}, {"labhop": {"parallel": 3}}, 3),
    ({"LABHOP_PARALLEL": "2"}, {"labhop": {"parallel": 3}}, 2),
])
def test_parallel_limit(env: dict, config: dict, expected: int) -> None:
    assert parallel_limit(config, env) == expected


@pytest.mark.parametrize("env, config, where", [
    ({"LABHOP_PARALLEL": "0"}, {}, r"\$LABHOP_PARALLEL: '0'"),
    ({"LABHOP_PARALLEL": "many"}, {}, r"\$LABHOP_PARALLEL: 'many'"),
    ({}, {"labhop": {"parallel": -1}}, "labhop.parallel in fabric.yaml: -1"),
])
def test_parallel_limit_rejects(env: dict, config: dict, where: str) -> None:
    with pytest.raises(UsageError, match=where):
        parallel_limit(config, env)


def test_host_lines_prefix_each_whole_line_once() -> None:
    sink = io.StringIO()
    lines = _HostLines(sink, threading.Lock())
    go = threading.Barrier(3, timeout=5)

    def work(host: str) -> None:
        _current.host = host
        go.wait()
        for i in range(200):
            lines.write(f"{host} part ")  # a line written in pieces...
            lines.write(f"{i}\n")         # ...is emitted whole
        lines.write(f"[{host}] already prefixed\nno newline at the end")
        lines.end_thread()
        _current.host = None

    threads = [threading.Thread(target=work, args=(h,)) for h in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = sink.getvalue().splitlines()
    assert len(out) == 3 * 202
    for host in ("a", "b", "c"):
        mine = [line for line in out if line.startswith(f"[{host}] ")]
        assert mine[:200] == [f"[{host}] {host} part {i}" for i in range(200)]
        assert mine[200:] == [f"[{host}] already prefixed", f"[{host}] no newline at the end"]
    lines.write("main thread text\n")
    assert sink.getvalue().endswith("main thread text\n")


def test_host_lines_flush_shows_a_question_at_once() -> None:
    sink = io.StringIO()
    lines = _HostLines(sink, threading.Lock())
    _current.host = "h"
    try:
        lines.write("The authenticity of host 'h' can't be established.\nAre you sure (yes/no)? ")
        assert sink.getvalue() == "[h] The authenticity of host 'h' can't be established.\n"
        lines.flush()  # what a prompt does before reading the answer
        assert sink.getvalue().endswith("[h] Are you sure (yes/no)? ")
        lines.write("recorded\nnext line\n")  # the rest of that line carries no second prefix
        lines.end_thread()
    finally:
        _current.host = None
    assert sink.getvalue().splitlines()[1:] == ["[h] Are you sure (yes/no)? recorded", "[h] next line"]
