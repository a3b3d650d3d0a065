"""A newcomer's first hour (issue 11), run as a user would: `labhop` from any directory, the
inventory lookup, exit codes at the program's edge, what the package installs.

No sshd here: everything runs against this machine (no -H), with a throwaway HOME.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import FAB, REPO

pytestmark = pytest.mark.integration

LABHOP = shutil.which("labhop") or str(Path(sys.executable).with_name("labhop"))


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABHOP_", "XDG_"))}
    env.update(HOME=str(home), **extra)
    return env


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.fixture()
def elsewhere(tmp_path: Path) -> tuple[Path, Path]:
    """A directory outside the clone, and an empty HOME."""
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "somewhere" / "else"
    work.mkdir(parents=True)
    return work, home


def test_labhop_runs_from_any_directory_with_the_users_inventory(elsewhere: tuple[Path, Path], tmp_path: Path) -> None:
    work, home = elsewhere
    listed = run([LABHOP, "--list"], work, clean_env(home))
    assert listed.returncode == 0, listed.stderr
    for name in ("provision", "serve", "status", "stop", "logs", "url", "tunnel", "rmate"):
        assert f"  {name} " in listed.stdout
    # `fab` outside the clone finds nothing; that is why `labhop` exists.
    assert run([FAB, "--list"], work, clean_env(home)).returncode != 0

    # The user's config dir holds the inventory: read from anywhere (its [defaults] prefix is used).
    user_inventory = home / ".config" / "labhop" / "inventory.toml"
    user_inventory.parent.mkdir(parents=True)
    prefix = tmp_path / "their-prefix"
    user_inventory.write_text(f'[defaults]\nprefix = "{prefix}"\nbin_dir = "{tmp_path}/bin"\n')
    planned = run([LABHOP, "provision", "--dry-run", "--offline"], work, clean_env(home))
    assert f"would    create {prefix} (0700)" in planned.stdout, planned.stdout + planned.stderr
    assert not prefix.exists()
    status = run([LABHOP, "status"], work, clean_env(home))
    assert (status.returncode, status.stdout.strip()) == (0, "[local] not running"), status.stderr

    # XDG_CONFIG_HOME moves the config dir; an error in the file found names it.
    xdg = tmp_path / "xdg"
    (xdg / "labhop").mkdir(parents=True)
    (xdg / "labhop" / "inventory.toml").write_text("[defaults]\nprot = 1\n")
    bad = run([LABHOP, "status"], work, clean_env(home, XDG_CONFIG_HOME=str(xdg)))
    assert bad.returncode == 2
    assert bad.stderr.startswith(f"labhop: {xdg}/labhop/inventory.toml:2: unknown key 'prot' in [defaults]")


def test_a_labhop_inventory_that_names_a_missing_file_is_an_error(elsewhere: tuple[Path, Path]) -> None:
    work, home = elsewhere
    done = run([LABHOP, "status"], work, clean_env(home, LABHOP_INVENTORY=str(work / "typo.toml")))
    assert (done.returncode, done.stderr.strip()) == (2, f"labhop: {work}/typo.toml: inventory file not found")


@pytest.mark.parametrize("program", ["labhop", "fab"])
@pytest.mark.parametrize("argv, message", [
    (["provision", "--bogus"], "labhop: No idea what '--bogus' is!"),
    (["bogus"], "labhop: No idea what 'bogus' is!"),
    (["logs", "--lines", "abc"], "labhop: local: --lines: 'abc' is not a number of lines"),
    (["serve", "--port", "http"], "labhop: local: --port: 'http' is not a port number"),
    (["tunnel", "--local-port", "99999"], "labhop: local: --local-port: port 99999 is out of range 1-65535"),
])
def test_usage_errors_exit_2_with_one_line(program: str, argv: list[str], message: str,
                                          elsewhere: tuple[Path, Path]) -> None:
    work, home = elsewhere
    command = [LABHOP] if program == "labhop" else [FAB, "-r", str(REPO)]
    done = run(command + argv, work, clean_env(home))
    assert (done.returncode, done.stderr.strip()) == (2, message), done.stderr
    assert done.stdout == ""


def test_the_installed_package_takes_no_generic_top_level_name(tmp_path: Path) -> None:
    """What pip installs: the `labhop` package and the `labhop` command, never a top-level `tasks`."""
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("labhop-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        top_level = archive.read(f"{info}/top_level.txt").decode().split()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert sorted({n.split("/")[0] for n in names}) == ["labhop", info]
    assert top_level == ["labhop"]
    assert "labhop = labhop.program:main" in entry_points
    assert "labhop/commands.py" in names


@pytest.mark.parametrize("program", ["labhop", "fab"])
def test_a_hint_names_the_command_the_user_typed(program: str, elsewhere: tuple[Path, Path]) -> None:
    work, home = elsewhere
    command = [LABHOP] if program == "labhop" else [FAB, "-r", str(REPO)]
    done = run(command + ["url"], work, clean_env(home))
    assert (done.returncode, done.stderr.strip()) == (
        1, f"labhop: local: no server configured here yet: run `{program} serve` first")
