"""serve's decisions (tasks/serving.py, plan_serve): probe facts in, settings / steps / refusals out."""
from __future__ import annotations

import json
from typing import Any

import pytest

from labhop.actions import ServeFlags, given_settings
from labhop.errors import LabhopError, UsageError
from labhop.inventory import HostEntry
from labhop.jupyter_config import ServerSettings, render
from labhop.packages import INSTALLED_MARK
from labhop.plan import plan_serve, server_settings
from labhop.serving import Given, choose_settings, config_changes, restart_refusal
from labhop.settings import resolve_settings
from labhop.steps import Command, Skip, WriteFile
from labhop.target.probe import HostFacts, parse_facts

HOME = "/home/ada"
TOKEN = "abc123"


def facts(**raw: Any) -> HostFacts:
    """A provisioned host (venv complete, rmate linked, on PATH), with ``raw`` over it."""
    base: dict[str, Any] = {
        "python": {"executable": "/usr/bin/python3", "version": [3, 11, 2]}, "uid": 1000, "home": HOME,
        "prefix": f"{HOME}/.labhop", "prefix_exists": True, "bin_dir": f"{HOME}/.local/bin", "tmux": "/usr/bin/tmux",
        "venv": {"exists": True, "version": "3.11.2", "complete": True, "installed": INSTALLED_MARK,
                 "packages": {"jupyterlab": "4.2.0", "bcrypt": "4.2.0", "rmate": "1.0.3"}},
        "rmate_link": f"{HOME}/.labhop/venv/bin/rmate", "login_path": f"{HOME}/.local/bin"}
    return parse_facts(json.dumps({**base, **raw}))


def config(port: int = 8888, root_dir: str = HOME) -> str:
    """The config serve writes for these settings on the host of ``facts()``."""
    settings = resolve_settings(None, port=str(port), root_dir=root_dir)
    return render(server_settings(facts(), settings, token=TOKEN, hashed_password=None))


def running(port: int = 8888, kernels: int = 0, **kw: Any) -> HostFacts:
    return facts(config=config(port), server={"pid": 4242, "alive": True, "kernels": kernels}, **kw)


def serve_plan(f: HostFacts, *, restart: bool = False, **flags: Any):  # type: ignore[no-untyped-def]
    settings = resolve_settings(None, **flags)
    server = server_settings(f, settings, token=TOKEN, hashed_password=None)
    return plan_serve(f, settings, server, restart=restart)


def steps(plan: Any) -> list[tuple[str, str]]:
    kinds = {Command: "command", WriteFile: "write", Skip: "skip"}
    return [(kinds[type(s)], s.description + (f": {s.reason}" if isinstance(s, Skip) else "")) for s in plan.steps]


# -- settings stick ------------------------------------------------------------------------------

def test_a_port_not_given_this_time_is_not_a_change() -> None:
    """`serve --port 8890`, then the quick start again: the server stays on 8890, nothing restarts."""
    f = running(port=8890, free_port=8888)
    choice = choose_settings(resolve_settings(None), Given(), f)
    assert choice.settings.port == 8890 and choice.notes == []
    plan = serve_plan(f, port=choice.settings.port)
    assert steps(plan)[-2:] == [("skip", f"write {HOME}/.labhop/jupyter/jupyter_server_config.py: unchanged"),
                                ("skip", "start JupyterLab: already running with this config (pid 4242)")]


def test_a_port_given_by_flag_or_inventory_is_a_change() -> None:
    f = running(port=8890)
    assert choose_settings(resolve_settings(None, port="8888"), Given(port=True), f).settings.port == 8888
    entry = HostEntry(name="gpu1", port=8891)
    given = given_settings(ServeFlags(), entry)
    assert given == Given(port=True)
    assert choose_settings(resolve_settings(entry), given, f).settings.port == 8891


def test_no_port_named_picks_the_first_free_one_and_says_so() -> None:
    """Another user holds 8888 on a shared login node: 8889 it is, and the config remembers it."""
    choice = choose_settings(resolve_settings(None), Given(), facts(free_port=8889))
    assert choice.settings.port == 8889
    assert choice.notes == ["port 8888 is busy on the target; using 8889, the next free one "
                            "(kept for later runs; --port names another)"]
    # A stopped server's remembered port, free again: used without a word.
    stopped = choose_settings(resolve_settings(None), Given(), facts(config=config(8889), free_port=8889))
    assert (stopped.settings.port, stopped.notes) == (8889, [])


def test_root_dir_and_variant_stick_too() -> None:
    f = facts(config=render(ServerSettings(ip="0.0.0.0", port=9000, root_dir="/data", public=True,
                                           hashed_password="$2b$12$x", certfile="/c", keyfile="/k")),
              server={"pid": 1, "alive": True})
    choice = choose_settings(resolve_settings(None), Given(), f)
    assert (choice.settings.public, choice.settings.ip, choice.settings.port, choice.settings.root_dir) == \
        (True, "0.0.0.0", 9000, "/data")
    assert choice.kept_public and choice.kept_https
    # --ip 127.0.0.1 says "localhost": the token variant again.
    back = choose_settings(resolve_settings(None, ip="127.0.0.1"), Given(ip=True), f)
    assert not back.settings.public and not back.kept_public


# -- live kernels are never lost silently -----------------------------------------------------------

def test_a_change_to_a_server_with_live_kernels_is_refused_without_restart() -> None:
    f = running(port=8888, kernels=2)
    with pytest.raises(LabhopError) as refused:
        serve_plan(f, port="8890")
    assert str(refused.value) == ("serve would restart JupyterLab (pid 4242) to change port 8888 -> 8890, and its "
                                  "2 running kernels would be lost; nothing was changed: add --restart to do it")
    plan = serve_plan(f, port="8890", restart=True)
    assert ("command", "restart: stop JupyterLab (config changed) (pid 4242)") in steps(plan)


def test_without_kernels_or_without_a_change_serve_goes_ahead() -> None:
    assert ("command", "restart: stop JupyterLab (config changed) (pid 4242)") in steps(
        serve_plan(running(kernels=0), port="8890"))
    assert steps(serve_plan(running(kernels=3), port="8888"))[-1] == \
        ("skip", "start JupyterLab: already running with this config (pid 4242)")
    assert restart_refusal(running(kernels=1), config(8888), files_changed=True, restart=False) == (
        "serve would restart JupyterLab (pid 4242) to change its TLS certificate, and its 1 running kernel "
        "would be lost; nothing was changed: add --restart to do it")


def test_config_changes_never_show_secrets() -> None:
    old = config(8888)
    new = render(server_settings(facts(), resolve_settings(None), token="other-token", hashed_password=None))
    assert config_changes(old, new) == ["other settings (token, password or options)"]
    assert "other-token" not in " ".join(config_changes(old, new))
    assert config_changes(old, config(8888, root_dir="/data")) == [f"root dir {HOME} -> /data"]


# -- the root dir is checked before anything is written ---------------------------------------------

def test_a_missing_root_dir_is_refused_before_any_step() -> None:
    with pytest.raises(UsageError) as refused:
        serve_plan(facts(root_dir_exists=False), root_dir="/nonexistent")
    assert str(refused.value) == ("root dir /nonexistent is not a directory on the target: create it, or name "
                                  "another with --root-dir")
    assert steps(serve_plan(facts(root_dir_exists=True), root_dir="/srv"))[-2][1].startswith("start JupyterLab")


def test_a_start_that_dies_is_seen_at_once_with_its_output_in_the_log() -> None:
    """Output goes to the log and the pid is written before the cd that may fail."""
    start = next(s for s in serve_plan(facts(), root_dir="/gone").steps if s.description.startswith("start"))
    assert isinstance(start, Command)
    redirect, pid, cd = (start.command.index(x) for x in (">> /home/ada/.labhop/server.log 2>&1",
                                                          "> /home/ada/.labhop/server.pid", "cd /gone"))
    assert redirect < pid < cd


# -- old NotebookApp settings -------------------------------------------------------------------------

def test_notebook_app_pins_only_when_old_settings_exist() -> None:
    quiet = serve_plan(facts())
    written = next(s for s in quiet.steps if isinstance(s, WriteFile))
    assert "NotebookApp" not in written.content and quiet.warnings == []
    found = serve_plan(facts(notebook_app_files=["/etc/jupyter/jupyter_config.py"]))
    written = next(s for s in found.steps if isinstance(s, WriteFile))
    assert "c.NotebookApp.ip = '127.0.0.1'" in written.content
    assert found.warnings == ["old NotebookApp settings in /etc/jupyter/jupyter_config.py: labhop's config repeats "
                              "its values under NotebookApp so that they win (JupyterLab logs a 'has moved' "
                              "warning for each)"]
