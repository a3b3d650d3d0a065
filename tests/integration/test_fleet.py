"""Fleet runs over real sshds: `fab -H alpha,beta,dead ...` with two live hosts and a dead one.

The hosts run at once (tasks/fleet.py), a dead host is one line in the summary and a
non-zero exit while the others succeed, --json is one parseable document, --dry-run
changes nothing on the hosts.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.harness.sshd import make_client_key, start_sshd, write_ssh_config
from tests.support import Workspace, free_port, http_status, need

pytestmark = pytest.mark.integration

LIVE = ("alpha", "beta")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    need(Path("/usr/sbin/sshd").exists(), "OpenSSH server (/usr/sbin/sshd) is not installed")
    root = tmp_path_factory.mktemp("fleet")
    key = make_client_key(root)
    servers = []
    try:
        for name in LIVE:
            servers.append(start_sshd(root, name, client_key=key))
        cache = root / "cache"  # one download for both hosts: uv and pip read these from the hosts' homes
        for server in servers:
            (server.home / ".config" / "uv").mkdir(parents=True)
            (server.home / ".config" / "uv" / "uv.toml").write_text(f'cache-dir = "{cache}/uv"\n')
            (server.home / ".config" / "pip").mkdir(parents=True)
            (server.home / ".config" / "pip" / "pip.conf").write_text(f"[global]\ncache-dir = {cache}/pip\n")
        config = write_ssh_config(root / "ssh_config", servers)
        with config.open("a") as f:  # nothing listens there: a host that is down
            f.write(f"\nHost dead\n    HostName 127.0.0.1\n    Port {free_port()}\n    User root\n"
                    f"    IdentityFile {key}\n    BatchMode yes\n    ConnectTimeout 5\n")
        ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=config)
        ports = {name: free_port() for name in LIVE}
        ws.write_inventory("".join(
            f'[hosts.{s.name}]\nport = {ports[s.name]}\nprefix = "{s.home}/.labhop-fleet"\n'
            f'bin_dir = "{s.home}/bin"\n\n' for s in servers) + '[groups]\nlab = ["alpha", "beta"]\n')
        yield ws, {s.name: s for s in servers}, ports
    finally:
        if servers:
            Workspace(root=root, inventory=root / "inventory.toml", ssh_config=root / "ssh_config").fab(
                "stop", host="@lab", timeout=120)
        for server in servers:
            server.stop()


def snapshot(home: Path) -> dict[str, tuple[int, int, float]]:
    """Every path below a host's home with its mode, size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            out[str(path.relative_to(home))] = (st.st_mode, st.st_size, st.st_mtime)
    return out


def host_lines(stdout: str) -> list[str]:
    """The hosts' own lines: everything before the summary (which follows a blank line)."""
    return stdout.split("\n\n", 1)[0].splitlines()


def test_dry_run_changes_nothing(fleet) -> None:
    ws, servers, _ = fleet
    before = {name: snapshot(s.home) for name, s in servers.items()}
    run = ws.fab("provision", "--dry-run", host="@lab").ok()
    for name, server in servers.items():
        mine = [line for line in run.stdout.splitlines() if line.startswith(f"[{name}] ")]
        assert f"[{name}]   would    create {server.home}/.labhop-fleet (0700)" in mine
        assert any("would    install jupyterlab, bcrypt, rmate" in line for line in mine)
        assert f"[{name}] provision: dry run, 5 step(s) would change, 0 already in place; nothing was changed" in mine
    assert all(line.startswith(("[alpha] ", "[beta] ")) for line in host_lines(run.stdout))

    doc = json.loads(ws.fab("provision", "--dry-run", "--json", host="@lab").ok().stdout)
    assert doc["ok"] is True and doc["exit_code"] == 0
    assert sorted(r["host"] for r in doc["results"]) == ["alpha", "beta"]
    assert all(r["dry_run"] and r["result"] == "would change" and len(r["changed"]) == 5 for r in doc["results"])

    assert {name: snapshot(s.home) for name, s in servers.items()} == before
    assert not any((s.home / ".labhop-fleet").exists() for s in servers.values())


def test_provision_with_a_dead_host(fleet) -> None:
    ws, servers, _ = fleet
    run = ws.fab("provision", host="alpha,beta,dead", timeout=900)
    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    for line in host_lines(run.stdout):
        assert line.startswith(("[alpha] ", "[beta] ")), line
    assert "[alpha]   changed  install jupyterlab, bcrypt, rmate" in run.stdout
    assert "[beta]   changed  install jupyterlab, bcrypt, rmate" in run.stdout
    dead = [line for line in run.stderr.splitlines() if line.startswith("[dead]")]
    assert len(dead) == 1 and dead[0].startswith("[dead] failed: ") and "refused" in dead[0], run.stderr

    summary = run.stdout.split("\n\n", 1)[1].splitlines()
    assert re.fullmatch(r"labhop: provision on 3 host\(s\): 2 ok, 1 failed \(\d+\.\ds\)", summary[0]), summary[0]
    rows = {line.split()[0]: line.split() for line in summary[2:]}
    assert rows["alpha"][1:3] == ["provision", "changed"] and rows["beta"][1:3] == ["provision", "changed"]
    assert rows["dead"][1:3] == ["provision", "FAILED"] and "refused" in " ".join(rows["dead"][4:])

    again = ws.fab("provision", "--json", host="@lab")
    assert again.returncode == 0, again.output
    doc = json.loads(again.stdout)
    assert [(r["host"], r["result"], r["changed"]) for r in doc["results"]] == \
        [("alpha", "unchanged", []), ("beta", "unchanged", [])]
    assert "[alpha] provision: nothing to do" in again.stderr  # human text: stderr in --json mode


def test_serve_status_stop(fleet) -> None:
    ws, servers, ports = fleet
    configs = {name: s.home / ".labhop-fleet" / "jupyter" / "jupyter_server_config.py" for name, s in servers.items()}
    dry = ws.fab("serve", "--dry-run", host="@lab").ok()
    assert "[alpha]   would    start JupyterLab" in dry.stdout or "would    start" in dry.stdout
    assert not any(path.exists() for path in configs.values())

    served = ws.fab("serve", "--json", host="@lab", timeout=300)
    assert served.returncode == 0, served.output
    doc = json.loads(served.stdout)
    for result in doc["results"]:
        port = ports[result["host"]]
        assert result["result"] == "changed" and result["url"].startswith(f"http://127.0.0.1:{port}/lab?token=")
        token = result["url"].split("token=", 1)[1]
        assert http_status(f"http://127.0.0.1:{port}/api/contents?token={token}") == 200

    status = ws.fab("status", "--json", host="alpha,beta,dead,nosuch.invalid")
    assert status.returncode == 1, status.output
    by_host = {r["host"]: r for r in json.loads(status.stdout)["results"]}
    assert by_host["alpha"]["running"] is True and by_host["beta"]["running"] is True
    assert by_host["alpha"]["port"] == ports["alpha"] and by_host["beta"]["port"] == ports["beta"]
    assert by_host["dead"]["ok"] is False and "refused" in by_host["dead"]["error"]
    assert by_host["nosuch.invalid"]["ok"] is False and "resolve" in by_host["nosuch.invalid"]["error"]
    assert "Traceback" not in status.output

    stopped = ws.fab("stop", host="@lab").ok()
    assert "labhop: stop on 2 host(s): all ok" in stopped.stdout
    after = json.loads(ws.fab("status", "--json", host="@lab").ok().stdout)
    assert [r["running"] for r in after["results"]] == [False, False]
    for name in LIVE:
        assert http_status_or_none(ports[name]) is None


def http_status_or_none(port: int):
    try:
        return http_status(f"http://127.0.0.1:{port}/api/status", timeout=2)
    except OSError:
        return None
