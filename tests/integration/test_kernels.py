"""The user's environments as kernels, over a real sshd and a real JupyterLab.

On the target: a venv with ipykernel, one without, and a conda-style environment found only through a
fake ``~/.conda/environments.txt`` (with a comment and a path that is gone). Each registered kernel is
started through the server's REST API and reports its own ``sys.prefix`` over the kernel websocket;
re-runs change nothing; a removed environment loses its kernel and a new one gets one, both without
a restart; ipykernel goes into an environment only when asked.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness.kernel import JupyterClient, run_cell
from tests.support import FabResult, Workspace, free_port, need

pytestmark = pytest.mark.integration

REPORT = "import os, sys; print(sys.prefix); print(os.environ.get('CONDA_PREFIX', '-')); print(os.environ['PATH'])"


@dataclass
class Scene:
    ws: Workspace
    home: Path
    port: int
    prefix: Path

    def fab(self, *args: str) -> FabResult:
        return self.ws.fab(*args, host="target", timeout=900)

    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self) -> str:
        text = (self.prefix / "jupyter" / "jupyter_server_config.py").read_text()
        return re.search(r"IdentityProvider.token = '([0-9a-f]+)'", text).group(1)  # type: ignore[union-attr]

    def kernelspecs(self) -> dict[str, str]:
        specs = JupyterClient(self.base(), self.token()).api("GET", "/api/kernelspecs")["kernelspecs"]
        return {name: spec["spec"]["display_name"] for name, spec in specs.items()}

    def report(self, kernel: str) -> list[str]:
        return run_cell(self.base(), self.token(), REPORT, kernel=kernel, timeout=120).strip().splitlines()


def make_env(path: Path, *, ipykernel: bool, conda: bool = False) -> Path:
    """A real environment: uv's venv with ipykernel from the package index, or Python's own venv (with pip)."""
    uv = shutil.which("uv")
    assert uv
    python = os.path.realpath(sys.executable)
    if not ipykernel:
        subprocess.run([python, "-m", "venv", str(path)], check=True, timeout=300)
        return path
    subprocess.run([uv, "venv", "--quiet", "--python", python, str(path)], check=True, timeout=300)
    if ipykernel:
        subprocess.run([uv, "pip", "install", "--quiet", "--python", str(path / "bin" / "python"), "ipykernel"],
                       check=True, timeout=600)
    if conda:
        (path / "conda-meta").mkdir()
        (path / "conda-meta" / "history").write_text("")
    return path


@pytest.fixture(scope="module")
def scene(sshd_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    need(shutil.which("uv") is not None, "uv (the test extras) makes the target's environments")
    root = tmp_path_factory.mktemp("kernels")
    home = Path(sshd_server.home)
    envs = home / "kernel-envs"
    shutil.rmtree(envs, ignore_errors=True)
    make_env(envs / "proj" / ".venv", ipykernel=True)
    make_env(envs / "bare", ipykernel=False)
    torch = make_env(envs / "miniconda3" / "envs" / "torch", ipykernel=True, conda=True)
    conda = home / ".conda"
    conda.mkdir(exist_ok=True)
    (conda / "environments.txt").write_text(f"# conda's registry\n{torch}\n{envs}/miniconda3/envs/deleted\n\n")
    port = free_port()
    prefix = home / ".labhop-kernels"
    ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=sshd_server.ssh_config)
    ws.write_inventory(f"""
        [hosts.target]
        port = {port}
        prefix = "{prefix}"
        kernels = ["~/kernel-envs/proj/.venv", "~/kernel-envs/bare"]
        packages = ["tabulate"]
    """)
    try:
        yield Scene(ws, home, port, prefix)
    finally:
        ws.fab("stop", host="target")
        shutil.rmtree(conda, ignore_errors=True)  # other modules share this HOME
        shutil.rmtree(envs, ignore_errors=True)


def test_environments_become_kernels_that_run_in_them(scene: Scene) -> None:
    out = scene.fab("serve").ok().stdout
    assert "changed  register kernel Python (proj)" in out
    assert "changed  register kernel Python (torch)" in out
    bare = scene.home / "kernel-envs" / "bare"
    assert (f"no kernel for {bare} (bare): it has no ipykernel; add it with `{bare}/bin/python -m pip install "
            f"ipykernel` (or --add-ipykernel ~/kernel-envs/bare)") in out
    assert not (scene.home / ".local" / "share" / "jupyter" / "kernels").exists()
    specs = scene.kernelspecs()
    assert specs["venv-proj"] == "Python (proj)" and specs["conda-torch"] == "Python (torch)"
    assert "python3" in specs  # labhop's own venv: the default kernel stays

    proj = scene.home / "kernel-envs" / "proj" / ".venv"
    prefix, conda_prefix, path = scene.report("venv-proj")
    assert (prefix, conda_prefix) == (str(proj), "-") and path.startswith(f"{proj}/bin:")
    torch = scene.home / "kernel-envs" / "miniconda3" / "envs" / "torch"
    prefix, conda_prefix, path = scene.report("conda-torch")
    assert (prefix, conda_prefix) == (str(torch), str(torch)) and path.startswith(f"{torch}/bin:")

    # `packages`: in labhop's own venv, so the default kernel imports it.
    assert re.search(r"changed  install jupyterlab, bcrypt, rmate, tabulate into ", out), out
    found = run_cell(scene.base(), scene.token(), "import tabulate, sys; print(tabulate.__name__, sys.prefix)",
                     kernel="python3", timeout=120).split()
    assert found == ["tabulate", str(scene.prefix / "venv")]

    status = json.loads(scene.fab("status", "--json").ok().stdout)["results"][0]
    assert {(k["name"], k["python"]) for k in status["kernels"]} == {
        ("venv-proj", f"{proj}/bin/python"), ("conda-torch", f"{torch}/bin/python")}
    assert "kernel: Python (torch) (conda-torch): " in scene.fab("status").ok().stdout


def test_a_rerun_changes_nothing(scene: Scene) -> None:
    for task in ("serve", "provision"):
        out = scene.fab(task).ok().stdout
        assert f"{task}: nothing to do" in out and "  changed  " not in out, out
        assert "ok       kernel Python (proj)" in out


def test_a_removed_environment_loses_its_kernel_a_new_one_gets_one_without_restart(scene: Scene) -> None:
    pid = json.loads(scene.fab("status", "--json").ok().stdout)["results"][0]["pid"]
    shutil.rmtree(scene.home / "kernel-envs" / "miniconda3" / "envs" / "torch")
    out = scene.fab("serve", "--add-ipykernel", "~/kernel-envs/bare").ok().stdout
    assert "changed  remove kernel(s) conda-torch" in out
    assert "changed  install ipykernel into " in out and "changed  register kernel Python (bare)" in out
    assert "already running with this config" in out
    assert json.loads(scene.fab("status", "--json").ok().stdout)["results"][0]["pid"] == pid
    specs = scene.kernelspecs()
    assert "conda-torch" not in specs and specs["venv-bare"] == "Python (bare)"
    assert scene.report("venv-bare")[0] == str(scene.home / "kernel-envs" / "bare")
    again = scene.fab("serve").ok().stdout
    assert "serve: nothing to do" in again


def test_a_bad_environment_is_one_line_exit_2_and_the_rest_is_done(scene: Scene) -> None:
    result = scene.fab("serve", "--kernel", "~/kernel-envs/nope")
    assert result.returncode == 2, result.output
    errors = [line for line in result.stderr.splitlines() if "nope" in line]
    assert errors and all("Traceback" not in line for line in result.stderr.splitlines())
    assert "`kernels` entry ~/kernel-envs/nope: no such environment" in result.stderr
    assert "serve: nothing to do" in result.stdout  # everything else in place, the server untouched
    assert "open: http://127.0.0.1:" in result.stdout
    assert "venv-proj" in scene.kernelspecs()


def test_a_package_dropped_from_the_list_is_left_installed_and_said_once(scene: Scene) -> None:
    text = scene.ws.inventory.read_text()
    scene.ws.inventory.write_text(text.replace('packages = ["tabulate"]', 'packages = ["humanize"]'))
    try:
        out = scene.fab("serve").ok().stdout
        # Only the added one is installed; the dropped one is said, and stays.
        assert re.search(r"changed  install humanize into \S+ from \S+; tabulate no longer listed, left installed",
                         out), out
        assert "already running with this config" in out
        assert "serve: nothing to do" in scene.fab("serve").ok().stdout
        scene.ws.inventory.write_text(text.replace('packages = ["tabulate"]\n', ""))
        out = scene.fab("serve").ok().stdout
        assert "changed  record the venv's packages: humanize no longer listed, left installed" in out, out
        assert "serve: nothing to do" in scene.fab("serve").ok().stdout
        left = subprocess.run([str(scene.prefix / "venv" / "bin" / "python"), "-c", "import humanize, tabulate"])
        assert left.returncode == 0  # left installed, as said
    finally:
        scene.ws.inventory.write_text(text)


def test_a_package_that_does_not_resolve_is_the_installers_one_line_and_nothing_half_installed(scene: Scene) -> None:
    bad = scene.fab("serve", "--with", "labhop-no-such-package-4711")
    assert bad.returncode == 1, bad.output
    errors = [line for line in bad.stderr.splitlines() if line.startswith("labhop: ")]
    assert len(errors) == 1 and "labhop-no-such-package-4711" in errors[0], bad.stderr
    assert "Traceback" not in bad.output
    # The failed step left no completion mark: the next run installs the list again, then all is in place.
    out = scene.fab("serve").ok().stdout
    assert "(the last install did not finish)" in out and "already running with this config" in out, out
    assert "serve: nothing to do" in scene.fab("serve").ok().stdout
