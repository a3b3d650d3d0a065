"""Kernel discovery (the target side, run here on fixture directories) and the kernelspec plan."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

from labhop.errors import UsageError
from labhop.jupyter_config import ServerSettings, render
from labhop.kernels import Env, KernelFacts, kernel_facts, plan_kernels, registered_kernels, render_spec
from labhop.settings import HostSettings
from labhop.steps import Command, Skip, WriteFile
from labhop.remote import probe as target
from labhop.target.layout import Layout
from labhop.target.probe import probe_args, probe_source

CONDA_JSON = json.dumps({"envs": ["/opt/conda", "/opt/conda/envs/torch", "/home/ada/.conda/envs/r"]})
REGISTRY = """\
# written by conda
/opt/conda

/opt/conda/envs/torch
  /opt/conda/envs/torch
# /opt/conda/envs/old
/gone/envs/deleted
"""


def executable(path: Path, text: str = "#!/bin/sh\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def venv(root: Path, *, version: str = "3.11.2", ipykernel: Optional[str] = "6.29.5") -> Path:
    executable(root / "bin" / "python")
    (root / "pyvenv.cfg").write_text(f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {version}\n")
    site = root / "lib" / f"python{'.'.join(version.split('.')[:2])}" / "site-packages"
    site.mkdir(parents=True)
    if ipykernel is not None:
        info = site / f"ipykernel-{ipykernel}.dist-info"
        info.mkdir()
        (info / "RECORD").write_text("")
    return root


def conda_env(root: Path, *, python: str = "3.10", ipykernel: bool = True, base: bool = False) -> Path:
    (root / "conda-meta").mkdir(parents=True)
    executable(root / "bin" / "python")
    (root / "lib" / f"python{python}" / "site-packages").mkdir(parents=True)
    if ipykernel:
        (root / "conda-meta" / "ipykernel-6.29.5-pyh3099207_0.json").write_text("{}")
    if base:
        (root / "condabin").mkdir()
    return root


# -- parsing -----------------------------------------------------------------------------------

def test_conda_json_lists_paths_in_order() -> None:
    assert target.parse_conda_json(CONDA_JSON) == ["/opt/conda", "/opt/conda/envs/torch", "/home/ada/.conda/envs/r"]
    assert target.parse_conda_json("not json") is None
    assert target.parse_conda_json('{"envs": "x"}') is None
    assert target.parse_conda_json('{"envs": ["/a", 3, ""]}') == ["/a"]


def test_conda_registry_skips_comments_blanks_and_repeats() -> None:
    assert target.parse_conda_registry(REGISTRY) == ["/opt/conda", "/opt/conda/envs/torch", "/gone/envs/deleted"]


def test_conda_paths_drop_missing_entries_of_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONDA_EXE", raising=False)
    torch = conda_env(tmp_path / "conda" / "envs" / "torch")
    (tmp_path / ".conda").mkdir()
    (tmp_path / ".conda" / "environments.txt").write_text(f"# conda\n{torch}\n{tmp_path}/gone\n\n")
    paths, source = target.conda_paths(str(tmp_path), lambda name: None)
    assert paths == [str(torch)]
    assert source == str(tmp_path / ".conda" / "environments.txt")
    assert target.conda_paths(str(tmp_path / "nohome"), lambda name: None) == ([], None)


def test_conda_on_the_path_is_asked_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONDA_EXE", raising=False)
    env = conda_env(tmp_path / "miniconda3", base=True)
    conda = executable(tmp_path / "bin" / "conda",
                       f"#!/bin/sh\necho '{json.dumps({'envs': [str(env), str(tmp_path / 'gone')]})}'\n")
    paths, source = target.conda_paths(str(tmp_path), lambda name: str(conda) if name == "conda" else None)
    assert paths == [str(env)] and source == f"{conda} env list --json"


def test_describe_a_venv_a_conda_env_and_their_faults(tmp_path: Path) -> None:
    home = str(tmp_path)
    v = target.describe_env("~/proj/.venv", home, "named")
    assert v["error"] == "no such environment (neither a directory nor an interpreter)"
    venv(tmp_path / "proj" / ".venv")
    v = target.describe_env("~/proj/.venv", home, "named")
    assert (v["kind"], v["python"], v["version"], v["ipykernel"], v["error"]) == (
        "venv", f"{home}/proj/.venv/bin/python", [3, 11, 2], "6.29.5", None)
    # Its bin/python stands for the environment.
    assert target.describe_env(f"{home}/proj/.venv/bin/python", home, "named")["path"] == f"{home}/proj/.venv"

    c = target.describe_env(str(conda_env(tmp_path / "conda" / "envs" / "torch", ipykernel=False)), home, "conda")
    assert (c["kind"], c["version"], c["ipykernel"], c["base"]) == ("conda", [3, 10], None, False)
    assert target.describe_env(str(conda_env(tmp_path / "conda2", base=True)), home, "conda")["base"] is True

    (tmp_path / "empty").mkdir()
    assert target.describe_env("~/empty", home, "named")["error"] == "has no bin/python"
    (tmp_path / "notes.txt").write_text("x")
    assert target.describe_env("~/notes.txt", home, "named")["error"] == "is not an executable interpreter"


def test_describe_a_bare_interpreter_runs_it_once() -> None:
    base = os.path.realpath(sys.executable)  # the interpreter under the test venv: no environment around it
    found = subprocess.run([base, "-c", "import importlib.util as u; print(u.find_spec('ipykernel') is not None)"],
                           capture_output=True, text=True, check=True).stdout.strip() == "True"
    env = target.describe_env(base, "/nonexistent", "named")
    assert env["kind"] == "python" and env["python"] == base and env["prefix"] == sys.base_prefix
    assert env["version"] == list(sys.version_info[:3])
    assert env["ipykernel"] == ("" if found else None) and env["error"] is None


def test_probe_reports_environments_and_registered_kernels(tmp_path: Path) -> None:
    """The whole probe, run here: the discovery rides inside it and lands in its JSON."""
    home = tmp_path / "home"
    torch = conda_env(home / "miniconda3" / "envs" / "torch")
    (home / ".conda").mkdir(parents=True)
    (home / ".conda" / "environments.txt").write_text(f"{torch}\n{home}/deleted\n")
    venv(home / "envs" / "bare", ipykernel=None)
    spec = home / ".labhop" / "share" / "jupyter" / "kernels" / "venv-old" / "kernel.json"
    spec.parent.mkdir(parents=True)
    spec.write_text('{"argv": ["/x/bin/python"]}')
    args = probe_args("~/.labhop", "~/.local/bin", kernels={"named": ["~/envs/bare", "~/nope"], "conda": True})
    env = {k: v for k, v in os.environ.items() if k not in ("CONDA_EXE",)}
    env.update(HOME=str(home), PATH="/usr/bin:/bin")
    out = subprocess.run([sys.executable, "-", args], input=probe_source(), capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout
    facts = kernel_facts(json.loads(out.splitlines()[-1])["kernels"])
    assert facts.registered == {"venv-old": '{"argv": ["/x/bin/python"]}'}
    assert facts.envs is not None
    assert [(e.given, e.source, e.ipykernel, e.error) for e in facts.envs] == [
        ("~/envs/bare", "named", None, None),
        ("~/nope", "named", None, "no such environment (neither a directory nor an interpreter)"),
        (str(torch), "conda", "", None)]
    # Without a request (status), only what is registered.
    quiet = probe_args("~/.labhop", "~/.local/bin")
    out = subprocess.run([sys.executable, "-", quiet], input=probe_source(), capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout
    assert kernel_facts(json.loads(out.splitlines()[-1])["kernels"]).envs is None


# -- plan ----------------------------------------------------------------------------------------

LAYOUT = Layout("/home/ada/.labhop")
KDIR = "/home/ada/.labhop/share/jupyter/kernels"


def env(path: str, **kw: Any) -> Env:
    defaults: dict[str, Any] = {"given": path, "source": "named", "path": path, "prefix": path,
                                "python": f"{path}/bin/python", "kind": "venv", "version": (3, 11, 2),
                                "ipykernel": "6.29.5"}
    defaults.update(kw)
    return Env(**defaults)


def plan(envs: list[Env], registered: Optional[dict[str, Optional[str]]] = None, **settings: Any):  # type: ignore[no-untyped-def]
    facts = KernelFacts(registered=registered or {}, envs=tuple(envs))
    return plan_kernels(facts, HostSettings(**settings), LAYOUT, home="/home/ada", python="/usr/bin/python3")


def test_each_environment_with_ipykernel_becomes_a_kernel_with_its_activation() -> None:
    torch = env("/opt/conda/envs/torch", kind="conda", source="conda", ipykernel="")
    proj = env("/home/ada/proj/.venv", given="~/proj/.venv")
    result = plan([torch, proj])
    writes = [s for s in result.steps if isinstance(s, WriteFile)]
    assert [w.path for w in writes] == [f"{KDIR}/conda-torch/kernel.json", f"{KDIR}/venv-proj/kernel.json"]
    assert writes[0].description == "register kernel Python (torch) (/opt/conda/envs/torch/bin/python)"
    spec = json.loads(writes[0].content)
    assert spec["argv"] == ["/opt/conda/envs/torch/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert spec["env"] == {"CONDA_PREFIX": "/opt/conda/envs/torch", "CONDA_DEFAULT_ENV": "torch",
                           "PATH": "/opt/conda/envs/torch/bin:${PATH}"}
    assert json.loads(writes[1].content)["env"] == {"VIRTUAL_ENV": "/home/ada/proj/.venv",
                                                     "PATH": "/home/ada/proj/.venv/bin:${PATH}"}
    assert json.loads(writes[1].content)["display_name"] == "Python (proj)"
    assert not result.notes and not result.problems

    again = plan([torch, proj], registered={"conda-torch": writes[0].content, "venv-proj": writes[1].content})
    assert all(isinstance(s, Skip) for s in again.steps) and len(again.steps) == 2


def test_a_vanished_environment_loses_its_kernel_and_a_changed_one_is_updated() -> None:
    proj = env("/home/ada/proj/.venv")
    old = render_spec(env("/home/ada/proj/.venv", python="/home/ada/proj/.venv/bin/python3"), "Python (proj)")
    result = plan([proj], registered={"venv-proj": old, "conda-gone": "{}"})
    assert [type(s) for s in result.steps] == [WriteFile, Command]
    assert result.steps[0].description.startswith("update kernel Python (proj)")
    assert result.steps[1].command == f"rm -rf {KDIR}/conda-gone"
    # Discovery not asked (status, stop): nothing planned, nothing removed.
    facts = KernelFacts(registered={"conda-gone": "{}"}, envs=None)
    assert not plan_kernels(facts, HostSettings(), LAYOUT, home="/home/ada", python="python3").steps


def test_without_ipykernel_the_command_is_said_and_installed_only_when_asked() -> None:
    bare = env("/home/ada/envs/bare", given="~/envs/bare", ipykernel=None)
    torch = env("/opt/conda/envs/torch", kind="conda", source="conda", ipykernel=None)
    result = plan([bare, torch])
    assert result.steps == []
    assert result.notes == [
        "no kernel for /home/ada/envs/bare (bare): it has no ipykernel; add it with "
        "`/home/ada/envs/bare/bin/python -m pip install ipykernel` (or --add-ipykernel ~/envs/bare)",
        "no kernel for /opt/conda/envs/torch (torch): it has no ipykernel; add it with "
        "`conda install -p /opt/conda/envs/torch ipykernel` (or --add-ipykernel torch)"]
    asked = plan([bare, torch], add_ipykernel=("torch",))
    assert [type(s) for s in asked.steps] == [Command, WriteFile]
    assert asked.steps[0].description == "install ipykernel into /opt/conda/envs/torch (--add-ipykernel)"
    assert "'/opt/conda/envs/torch/bin/python' -m pip install" in asked.steps[0].command \
        or "/opt/conda/envs/torch/bin/python -m pip install" in asked.steps[0].command
    with pytest.raises(UsageError, match=r"--add-ipykernel tensorflow: no such environment .*torch"):
        plan([bare, torch], add_ipykernel=("tensorflow",))


def test_named_environments_that_cannot_be_kernels_are_problems_conda_ones_notes() -> None:
    result = plan([env("/x", given="~/x", error="has no bin/python", python=None),
                   env("/py27", version=(2, 7, 18)),
                   env("/opt/conda/envs/old", source="conda", kind="conda", version=(3, 6)),
                   env("/opt/conda/envs/r", source="conda", kind="conda", python=None, error="has no bin/python"),
                   env("/ok")])
    assert result.problems == ["`kernels` entry ~/x: has no bin/python",
                               "`kernels` entry /py27: Python 2.7.18 is too old for ipykernel (needs 3.8+)"]
    assert result.notes == ["conda environment /opt/conda/envs/old: Python 3.6 is too old for ipykernel (needs 3.8+)"]
    assert [s.description for s in result.steps] == ["register kernel Python (ok) (/ok/bin/python)"]


def test_names_stay_unique() -> None:
    a, b = env("/home/ada/a/proj"), env("/home/ada/b/proj")
    writes = [s for s in plan([a, b]).steps if isinstance(s, WriteFile)]
    assert len({w.path for w in writes}) == 2
    assert [json.loads(w.content)["display_name"] for w in writes] == ["Python (proj, ~/a/proj)",
                                                                       "Python (proj, ~/b/proj)"]
    base = env("/opt/miniconda3", kind="conda", base=True, source="conda")
    assert json.loads(render_spec(base, "x"))["env"]["CONDA_DEFAULT_ENV"] == "base"
    dollar = env("/home/ada/$odd")
    assert json.loads(render_spec(dollar, "x"))["env"]["PATH"] == "/home/ada/$$odd/bin:${PATH}"


def test_status_lists_registered_kernels() -> None:
    spec = render_spec(env("/home/ada/proj/.venv"), "Python (proj)")
    listed = registered_kernels(KernelFacts(registered={"venv-proj": spec, "broken": None}))
    assert listed == [
        {"name": "broken", "display_name": None, "python": None, "environment": None},
        {"name": "venv-proj", "display_name": "Python (proj)", "python": "/home/ada/proj/.venv/bin/python",
         "environment": "/home/ada/proj/.venv"}]


def test_the_server_config_searches_labhops_kernel_dir_first() -> None:
    """KernelSpecManager.kernel_dirs is not configurable: the config puts the directory on JUPYTER_PATH,
    and a KernelSpecManager made after it (as the server's is) searches it first."""
    from jupyter_client.kernelspec import KernelSpecManager
    from traitlets.config import Config

    data = str(Path(KDIR).parent)
    text = render(ServerSettings(ip="127.0.0.1", port=8888, root_dir="/home/ada", public=False, token="t",
                                 data_dir=data))
    saved = os.environ.get("JUPYTER_PATH")
    try:
        os.environ["JUPYTER_PATH"] = "/elsewhere"
        for _ in range(2):  # loaded twice (as traitlets may): the directory is there once
            exec(compile(text, "config", "exec"), {"get_config": Config})
        assert os.environ["JUPYTER_PATH"] == os.pathsep.join([data, "/elsewhere"])
        assert KernelSpecManager().kernel_dirs[:2] == [KDIR, "/elsewhere/kernels"]
    finally:
        if saved is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = saved


def test_problems_are_one_line_each_and_exit_2_after_everything_else(capsys: pytest.CaptureFixture[str]) -> None:
    from labhop.cli import Session
    from labhop.executor import ApplyResult
    from labhop.plan import Plan
    from labhop.report import Reporter

    for problems, final in (
            (["`kernels` entry ~/x: has no bin/python"],
             "`kernels` entry ~/x: has no bin/python (everything else is done)"),
            (["`kernels` entry ~/x: has no bin/python", "`kernels` entry ~/y: has no bin/python"],
             "2 entries of `kernels` / --kernel cannot be kernels (each said above); everything else is done")):
        target: Any = type("Target", (), {"c": None})()  # no steps: nothing runs on it
        session = Session(target=target, settings=HostSettings(), report=Reporter("gpu1"))
        session.apply(Plan(notes=["no kernel for /e (e): it has no ipykernel"], problems=problems), "serve")
        with pytest.raises(UsageError) as excinfo:
            session.result(ApplyResult())
        assert str(excinfo.value) == final and excinfo.value.exit_code == 2
        out, err = capsys.readouterr()
        assert "[gpu1] no kernel for /e (e): it has no ipykernel" in out
        warned = [line for line in err.splitlines() if "`kernels` entry" in line]
        assert warned == ([] if len(problems) == 1 else [f"[gpu1] warning: {p}" for p in problems])
