"""Fleet runs over real sshds: `fab -H alpha,beta,dead ...` with two live hosts and a dead one.

The hosts run at once (tasks/fleet.py), a dead host is one line in the summary and a
non-zero exit while the others succeed, --json is one parseable document, --dry-run
changes nothing on the hosts.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.sshd import make_client_key, start_sshd, write_ssh_config
from tests.support import REPO, Workspace, free_port, http_status, login, need

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
        # online too, uv travels over SSH: one step to push it when the controller has yet to download
        # it, three (push, check, unpack) once it is cached from an earlier run
        assert any("would    push " in line for line in mine)
        would = [line for line in mine if line.startswith(f"[{name}]   would ")]
        assert len(would) >= 6, mine
        assert (f"[{name}] provision: dry run, {len(would)} step(s) would change, 0 already in place; "
                "nothing was changed") in mine
    assert all(line.startswith(("[alpha] ", "[beta] ")) for line in host_lines(run.stdout))

    doc = json.loads(ws.fab("provision", "--dry-run", "--json", host="@lab").ok().stdout)
    assert doc["ok"] is True and doc["exit_code"] == 0
    assert sorted(r["host"] for r in doc["results"]) == ["alpha", "beta"]
    assert all(r["dry_run"] and r["result"] == "would change" and len(r["changed"]) >= 6 for r in doc["results"])

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


def test_ci_example_workflow(fleet, tmp_path: Path) -> None:
    """docs/ci.md's GitHub Actions job, its run: steps as Actions runs them, against a real sshd."""
    try:
        import yaml
    except ImportError:
        need(False, "PyYAML is needed to read the workflow in docs/ci.md")
    _, servers, _ = fleet
    host = servers["alpha"]
    text = (REPO / "docs" / "ci.md").read_text()
    workflow = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    job = workflow["jobs"]["provision"]
    home, temp = tmp_path / "home", tmp_path / "runner-temp"
    home.mkdir()
    temp.mkdir()
    port = free_port()
    password = "ci password from a secret"
    values = {
        "secrets.LAB_SSH_KEY": host.identity_file.read_text().strip(),
        "secrets.LAB_KNOWN_HOSTS": host.known_hosts_line,
        "secrets.LAB_JUPYTER_PASSWORD": password,
        "vars.LAB_HOST": host.address, "vars.LAB_PORT": str(host.port), "vars.LAB_USER": host.user,
        "runner.temp": str(temp),
    }

    def expand(value: str) -> str:
        return re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: values[m.group(1)], str(value))

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("LABHOP_")}
    base_env.update(HOME=str(home), RUNNER_TEMP=str(temp), CI="true")
    base_env.update({k: expand(v) for k, v in job.get("env", {}).items()})
    base_env["JUPYTER_PORT"] = str(port)  # a free port on this shared machine instead of 8888
    ran = []
    try:
        for step in job["steps"]:
            if "run" not in step or "pip install" in step["run"]:
                continue  # actions (checkout, setup-python) and installing: done already here
            env = {**base_env, **{k: expand(v) for k, v in step.get("env", {}).items()}}
            proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", expand(step["run"])],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
                                  stdin=subprocess.DEVNULL)
            assert proc.returncode == 0, f"step {step.get('name')!r} failed:\n{proc.stdout}\n{proc.stderr}"
            ran.append((step.get("name"), proc.stdout))
        assert [name for name, _ in ran] == ["SSH key, known host and ssh_config from secrets", "Provision and serve"]
        provisioned = json.loads((temp / "provision.json").read_text())
        served = json.loads((temp / "serve.json").read_text())
        assert provisioned["ok"] and served["ok"]
        url = served["results"][0]["url"]
        assert url == f"https://{host.address}:{port}/lab"
        assert ran[1][1].strip() == f"lab serve: changed {url}"
        assert login(url[: -len("/lab")], password)[1] == 200
        assert password not in (temp / "serve.json").read_text() + ran[1][1]
    finally:
        subprocess.run(["fab", "-H", "lab", "stop"], cwd=REPO, env=base_env, capture_output=True, timeout=120)


def test_bench_runs(tmp_path: Path) -> None:
    """The benchmark code still works: one quick pass of `python bench/run_all.py` (figures not checked)."""
    need(os.geteuid() == 0, "the benchmarks' topology needs root for network namespaces")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run_all.py"), "--quick"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for figure in ("no-op re-provision vs `ssh target true`: ", "3 hosts in parallel vs 1 host: ",
                   "`serve` until the first answered HTTP request vs `jupyter lab` by hand: "):
        assert figure in proc.stdout, proc.stdout
    assert "wrote" not in proc.stdout  # --quick writes no docs/BENCHMARKS.md
