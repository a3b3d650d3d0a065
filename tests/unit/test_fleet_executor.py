"""FleetExecutor inside a real Fabric program, with tasks that never open a connection.

The hosts are only names here (Fabric creates a Connection lazily); what is under
test is the executor: concurrency bound, prefixes, failures that do not stop the
others, skip-after-failure, summary, --json, exit codes. Real SSH: tests/integration/test_fleet.py.
"""
from __future__ import annotations

import os
import signal
import json
import threading
from pathlib import Path
from typing import Optional

import fabric
import pytest
from fabric import task
from fabric.config import Config
from fabric.main import Fab
from invoke import Collection

from labhop.cli import edge
from labhop.errors import LabhopError, UsageError
from labhop.fleet import FleetExecutor
from labhop.outcome import applied

state = {"active": 0, "peak": 0}
lock = threading.Lock()
barrier: Optional[threading.Barrier] = None
released = threading.Event()


@task
@edge
def work(c, json_=False, fail_on="", usage_on=""):
    with lock:
        state["active"] += 1
        state["peak"] = max(state["peak"], state["active"])
    try:
        if barrier is not None:
            barrier.wait()  # returns only when that many hosts run at the same time
        print(f"working on {c.host}")
        if c.host in fail_on.split(","):
            raise LabhopError(f"connection refused on {c.host}")
        if c.host in usage_on.split(","):
            raise UsageError("--port: 'x' is not a port number")
        return applied(c.host, "work", [f"step on {c.host}"], 1)
    finally:
        with lock:
            state["active"] -= 1


@task
@edge
def hang(c):
    if c.host == "h1":
        # Ctrl-C as the terminal sends it: a real SIGINT, which also wakes a main thread blocked in join()
        # (interrupt_main() only sets a flag: it raced with the workers' start).
        os.kill(os.getpid(), signal.SIGINT)
    released.wait(timeout=5)
    return applied(c.host, "hang", [], 1)


@task
def crash(c):
    raise RuntimeError("a bug, not a host fault")


@task
@edge
def after(c):
    print("after ran")
    return applied(c.host, "after", [], 1)


def run(argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys, *,
        parallel: str = "8") -> tuple[int, str, str]:
    monkeypatch.setenv("LABHOP_PARALLEL", parallel)
    (tmp_path / "inventory.toml").write_text('[groups]\nlab = ["h1", "h2", "h3"]\n')
    monkeypatch.setenv("LABHOP_INVENTORY", str(tmp_path / "inventory.toml"))
    state.update(active=0, peak=0)
    program = Fab(name="Fabric", version=fabric, executor_class=FleetExecutor, config_class=Config,
                  namespace=Collection(work, crash, after, hang))
    code = 0
    try:
        program.run(["fab", *argv])
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def no_barrier():
    global barrier
    barrier = None
    yield
    barrier = None


def test_hosts_run_at_once_with_prefixed_lines_and_a_summary(monkeypatch, tmp_path, capsys) -> None:
    global barrier
    barrier = threading.Barrier(3, timeout=10)
    code, out, err = run(["-H", "@lab", "work"], monkeypatch, tmp_path, capsys)
    assert code == 0, err
    assert state["peak"] == 3
    for host in ("h1", "h2", "h3"):
        assert f"[{host}] working on {host}" in out.splitlines()
    assert "labhop: work on 3 host(s): all ok" in out
    assert [line.split()[:3] for line in out.splitlines() if line.startswith("h")] == \
        [["h1", "work", "changed"], ["h2", "work", "changed"], ["h3", "work", "changed"]]


def test_parallel_bound(monkeypatch, tmp_path, capsys) -> None:
    code, out, err = run(["-H", "h1,h2,h3,h4,h5", "work"], monkeypatch, tmp_path, capsys, parallel="2")
    assert code == 0, err
    assert state["peak"] <= 2


def test_one_failure_does_not_stop_the_others(monkeypatch, tmp_path, capsys) -> None:
    code, out, err = run(["-H", "h1,h2,h3", "work", "--fail-on", "h2", "after"], monkeypatch, tmp_path, capsys)
    assert code == 1
    assert "[h2] failed: connection refused on h2" in err.splitlines()
    assert "Traceback" not in out + err
    rows = {tuple(line.split()[:3]) for line in out.splitlines() if line.startswith("h")}
    assert rows == {("h1", "work", "changed"), ("h2", "work", "FAILED"), ("h3", "work", "changed"),
                    ("h1", "after", "unchanged"), ("h2", "after", "SKIPPED"), ("h3", "after", "unchanged")}
    assert out.count("after ran") == 2


def test_usage_errors_everywhere_exit_2(monkeypatch, tmp_path, capsys) -> None:
    code, _, err = run(["-H", "h1,h2", "work", "--usage-on", "h1,h2"], monkeypatch, tmp_path, capsys)
    assert code == 2
    assert "[h1] failed: --port: 'x' is not a port number" in err


def test_unknown_group_is_one_line_exit_2(monkeypatch, tmp_path, capsys) -> None:
    code, out, err = run(["-H", "@gpus", "work"], monkeypatch, tmp_path, capsys)
    assert code == 2
    assert err.strip() == f"labhop: {tmp_path / 'inventory.toml'}: no group 'gpus' (known: lab)"
    assert state["peak"] == 0


def test_bad_parallel_setting_exit_2(monkeypatch, tmp_path, capsys) -> None:
    code, _, err = run(["-H", "h1", "work"], monkeypatch, tmp_path, capsys, parallel="none")
    assert code == 2 and err.strip() == "labhop: $LABHOP_PARALLEL: 'none' is not a positive number of hosts"


def test_unexpected_exception_is_one_line(monkeypatch, tmp_path, capsys) -> None:
    code, out, err = run(["-H", "h1,h2", "crash"], monkeypatch, tmp_path, capsys)
    assert code == 1
    assert "[h1] failed: unexpected RuntimeError: a bug, not a host fault" in err
    assert "Traceback" not in err


def test_json_document_alone_on_stdout(monkeypatch, tmp_path, capsys) -> None:
    code, out, err = run(["-H", "h1,h2,h3", "work", "--json", "--fail-on", "h3"], monkeypatch, tmp_path, capsys)
    assert code == 1
    doc = json.loads(out)  # the whole of stdout is one document
    assert doc["ok"] is False and doc["exit_code"] == 1
    assert [(r["host"], r["ok"], r["result"]) for r in doc["results"]] == \
        [("h1", True, "changed"), ("h2", True, "changed"), ("h3", False, "failed")]
    assert doc["results"][2]["error"] == "connection refused on h3"
    assert "[h1] working on h1" in err and "HOST" in err  # human text and the table: stderr


def test_single_host_keeps_plain_fabric_output(monkeypatch, tmp_path, capsys) -> None:
    code, out, err = run(["-H", "h1", "work", "--fail-on", "h1"], monkeypatch, tmp_path, capsys)
    assert code == 1
    assert out == "working on h1\n"  # no prefix added, no table for one host
    assert err.strip() == "labhop: h1: connection refused on h1"


def test_json_on_one_task_keeps_stdout_for_the_document(monkeypatch, tmp_path, capsys) -> None:
    code, out, err = run(["-H", "h1", "after", "work", "--json"], monkeypatch, tmp_path, capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert [(r["host"], r["task"]) for r in doc["results"]] == [("h1", "after"), ("h1", "work")]
    assert "after ran" in err and "working on h1" in err


@pytest.mark.parametrize("hosts", ["h1", "h1,h2"])
def test_under_the_fleet_the_document_is_printed_once_by_the_executor(hosts, monkeypatch, tmp_path, capsys) -> None:
    """The tasks' edge leaves --json to the executor (told through the run's config): one document in all."""
    code, out, err = run(["-H", hosts, "work", "--json", "--fail-on", "h2"], monkeypatch, tmp_path, capsys)
    assert code == (1 if "h2" in hosts else 0), err
    documents = [line for line in (out + err).splitlines() if line.lstrip("[h12] ").startswith("{")]
    assert len(documents) == 1 and json.loads(documents[0]) == json.loads(out)


def test_edge_prints_the_document_when_no_fleet_executor_runs(capsys) -> None:
    """Run by another executor (or called directly), a --json task still prints its one document."""
    from fabric import Connection

    c = Connection("h9")
    assert work.body(c, json_=True).result == "changed"
    doc = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [(r["host"], r["result"]) for r in doc["results"]] == [("h9", "changed")]
    with pytest.raises(Exception) as failure:
        work.body(c, json_=True, fail_on="h9")
    assert getattr(failure.value, "code", None) == 1
    doc = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert doc["exit_code"] == 1 and doc["results"][0]["error"] == "connection refused on h9"


def test_ctrl_c_stops_the_run_and_says_where(monkeypatch, tmp_path, capsys) -> None:
    try:
        code, out, err = run(["-H", "h1,h2", "hang", "after"], monkeypatch, tmp_path, capsys)
    finally:
        released.set()
    assert code == 130
    rows = [line.split()[:3] + [line.split()[-1]] for line in out.splitlines() if line.startswith("h")]
    assert rows == [["h1", "hang", "FAILED", "interrupted"], ["h2", "hang", "FAILED", "interrupted"]]
    assert "after ran" not in out  # no further task starts


def test_making_contexts_does_not_reparse_the_ssh_config(monkeypatch, tmp_path, capsys) -> None:
    """Fabric's Config.clone() re-reads the ssh_config into the source config; a fleet behind a
    ProxyJump clones the run's config once per host, which grew it by a whole file per host."""
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host bastion\n    HostName 192.0.2.1\n" + "".join(
        f"Host h{i}\n    HostName 192.0.2.{i + 10}\n    ProxyJump bastion\n" for i in range(1, 7)))
    seen: list[int] = []

    @task
    @edge
    def blocks(c):
        with lock:
            seen.append(len(c.config.base_ssh_config._config))
        assert c.gateway.original_host == "bastion"  # the ProxyJump was read, so the config was cloned
        return applied(c.host, "blocks", [], 1)

    monkeypatch.setenv("LABHOP_INVENTORY", str(tmp_path / "inventory.toml"))
    (tmp_path / "inventory.toml").write_text("")
    program = Fab(name="Fabric", version=fabric, executor_class=FleetExecutor, config_class=Config,
                  namespace=Collection(blocks))
    program.run(["fab", "-S", str(ssh_config), "-H", ",".join(f"h{i}" for i in range(1, 7)), "blocks"])
    assert "blocks on 6 host(s): all ok" in capsys.readouterr().out
    one_file = 1 + 7  # paramiko's implicit leading "Host *" block, then the file's 7
    assert seen == [one_file] * 6


def test_each_host_offers_only_its_own_keys(monkeypatch, tmp_path, capsys) -> None:
    """Fabric writes a host's ssh_config IdentityFile into the config its Connection was given;
    with one config for the whole fleet, the sixth host offered the five keys before its own."""
    hosts = [f"h{i}" for i in range(1, 7)]
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("".join(f"Host {h}\n    HostName 192.0.2.{i}\n    IdentityFile /keys/{h}\n"
                                  for i, h in enumerate(hosts, 10)))
    offered: dict[str, list[str]] = {}

    @task
    @edge
    def keys(c):
        with lock:
            offered[c.host] = list(c.connect_kwargs.get("key_filename") or [])
        return applied(c.host, "keys", [], 1)

    monkeypatch.setenv("LABHOP_INVENTORY", str(tmp_path / "inventory.toml"))
    (tmp_path / "inventory.toml").write_text("")
    program = Fab(name="Fabric", version=fabric, executor_class=FleetExecutor, config_class=Config,
                  namespace=Collection(keys))
    program.run(["fab", "-S", str(ssh_config), "-H", ",".join(hosts), "keys"])
    assert "keys on 6 host(s): all ok" in capsys.readouterr().out
    assert offered == {f"192.0.2.{i}": [f"/keys/{h}"] for i, h in enumerate(hosts, 10)}
