"""The README's two commands, verbatim, as a newcomer runs them: on a copy of the clone, in a fresh
venv, with an empty HOME. One sets up and runs the main job (a local JupyterLab), the other sets up
what the tests need and runs them (limited here, through PYTEST_ADDOPTS, to one small test file: the
whole suite would run itself again). `.ci/run` must call that same test command.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from tests.support import REPO, controller_cache, http_status, need

pytestmark = pytest.mark.integration

README = REPO / "README.md"


def readme_commands() -> tuple[str, str]:
    """The ```sh blocks of the README's quick start: (main job, tests)."""
    text = README.read_text()
    section = text[text.index("## Quick start"):]
    section = section[:section.index("\n## ", 1)]
    blocks = [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]
    assert len(blocks) == 2 and all("\n" not in block for block in blocks), blocks
    return blocks[0], blocks[1]


def test_ci_runs_the_readme_test_command() -> None:
    _, tests = readme_commands()
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert tests in lines


def copy_clone(dest: Path) -> Path:
    """What a fresh clone holds: the tracked files (as they are in the work tree)."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, timeout=60)
    need(listed.returncode == 0, "the repository is not a git checkout")
    for name in listed.stdout.decode().split("\0"):
        source = REPO / name
        if not name or not (source.exists() or source.is_symlink()):
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return dest


def test_the_readme_commands_work_verbatim_on_a_fresh_clone(tmp_path: Path) -> None:
    need(shutil.which("git") is not None, "git is needed to list the clone's files")
    main_job, tests = readme_commands()
    clone = copy_clone(tmp_path / "clone")
    home = tmp_path / "home"
    home.mkdir()
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LABHOP_", "XDG_", "PYTHON", "VIRTUAL_ENV", "JUPYTER", "PYTEST", "UV_"))}
    # A newcomer's PATH: the system's, without tools installed below this machine's own HOME (pyenv
    # shims, rustup proxies that write into whatever HOME they see).
    system_path = [p for p in os.environ["PATH"].split(":") if p and not p.startswith(os.path.expanduser("~"))]
    env.update(HOME=str(home), VIRTUAL_ENV=str(env_dir), PATH=":".join([str(env_dir / "bin"), *system_path]),
               # Downloads once per test session, not per empty HOME (a cache, not configuration).
               PIP_CACHE_DIR=str(controller_cache() / "pip"), UV_CACHE_DIR=str(controller_cache() / "uv"),
               LABHOP_CACHE_DIR=str(controller_cache()))

    def sh(command: str, timeout: float = 1200, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", "-c", command], cwd=clone, env={**env, **extra}, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    served = sh(main_job)
    try:
        assert served.returncode == 0, served.stdout[-3000:] + served.stderr[-3000:]
        link = served.stdout.strip().splitlines()[-1]
        match = re.fullmatch(r"\[local\] open: (http://127\.0\.0\.1:(\d+)/lab\?token=(\w+))", link)
        assert match, served.stdout[-2000:]
        port, token = match.group(2), match.group(3)
        assert http_status(f"http://127.0.0.1:{port}/api/contents?token={token}") == 200
        # The files of the user's it touched are the ones the README names. Jupyter's own (its runtime files,
        # the npm log of JupyterLab's registry check when npm is installed) and caches aside.
        touched = sorted(str(p.relative_to(home)) for p in home.rglob("*")
                         if (p.is_file() or p.is_symlink()) and not p.relative_to(home).parts[0] == ".labhop")
        jupyters = (".local/share/jupyter/", ".jupyter/lab/", ".npm/_logs/", ".cache/")
        assert [p for p in touched if not p.startswith(jupyters)] == [".local/bin/rmate", ".profile"], touched
        assert "# >>> labhop >>>" in (home / ".profile").read_text()
        assert "changed  link" in served.stdout and "to the login PATH in ~/.profile" in served.stdout
        assert "has moved from NotebookApp to ServerApp" not in (home / ".labhop" / "server.log").read_text()
    finally:
        stopped = sh("labhop stop", timeout=120)
    assert stopped.returncode == 0, stopped.stderr

    # The test command, with the suite cut down to one small file.
    tested = sh(tests, PYTEST_ADDOPTS="-q -p no:cacheprovider tests/unit/test_inventory.py")
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
    assert re.search(r"\d+ passed", tested.stdout), tested.stdout[-2000:]
