from __future__ import annotations

from pathlib import Path

import pytest

from labhop.errors import UsageError
from labhop.inventory import current_inventory, inventory_path, load_inventory, parse_inventory

GOOD = """
[defaults]
prefix = "~/.labhop"

[hosts.doorkeeper]
hostname = "login.example.edu"
user = "ada"

[hosts.internal]
hostname = "10.0.0.5"
jump = ["doorkeeper"]
port = 8890
public = false

[groups]
gpu = ["internal"]
"""


def test_parses_hosts_defaults_and_groups() -> None:
    inv = parse_inventory(GOOD, Path("inventory.toml"))
    internal = inv.get("internal")
    assert internal is not None
    assert internal.hostname == "10.0.0.5"
    assert internal.jump == ("doorkeeper",)
    assert internal.port == 8890
    assert internal.prefix == "~/.labhop"  # from [defaults]
    assert inv.expand("@gpu") == ["internal"]
    assert inv.expand("plainhost") == ["plainhost"]
    assert inv.settings_for("unknown").prefix == "~/.labhop"
    assert inv.settings_for("unknown").name == "unknown"


@pytest.mark.parametrize("text, message", [
    ("[hosts.a]\nhostname = \"x\"\nprot = 1\n", "inventory.toml:3: unknown key 'prot' in [hosts.a]"),
    ("[hosts.a]\nport = 70000\n", "inventory.toml:2: 'port' in [hosts.a] must be a port number 1-65535, got 70000"),
    ("[hosts.a]\nport = true\n", "inventory.toml:2: 'port' in [hosts.a] must be an integer, got True"),
    ("[hosts.a]\nport = \"8888\"\n", "inventory.toml:2: 'port' in [hosts.a] must be an integer"),
    ("\n\n[hosts.a\nport = 1\n", "inventory.toml:3: malformed TOML"),
    ("[hosts.a]\njump = [1]\n", "inventory.toml:2: 'jump' in [hosts.a] must be a list of host names"),
    ("[hostz.a]\nport = 1\n", "inventory.toml:1: unknown table [hostz]"),
    ("[groups]\ngpu = \"a\"\n", "inventory.toml:2: group 'gpu' must be a list of host names"),
    ("[defaults]\nbogus = 1\n", "inventory.toml:2: unknown key 'bogus' in [defaults]"),
])
def test_errors_name_file_line_and_key(text: str, message: str) -> None:
    with pytest.raises(UsageError) as excinfo:
        parse_inventory(text, Path("inventory.toml"))
    assert str(excinfo.value).startswith(message)


def test_unknown_group_is_a_usage_error() -> None:
    inv = parse_inventory(GOOD, Path("inventory.toml"))
    with pytest.raises(UsageError, match="no group 'cpu'"):
        inv.expand("@cpu")


def test_missing_file_is_empty_unless_required(tmp_path: Path) -> None:
    assert load_inventory(tmp_path / "nope.toml").hosts == {}
    with pytest.raises(UsageError, match="not found"):
        load_inventory(tmp_path / "nope.toml", required=True)


def test_env_overrides_path(tmp_path: Path) -> None:
    assert inventory_path(tmp_path, {"LABHOP_INVENTORY": "/x/inv.toml"}) == Path("/x/inv.toml")
    assert inventory_path(tmp_path, {"HOME": str(tmp_path / "home")}) == tmp_path / "inventory.toml"


def test_lookup_order_env_then_current_directory_then_user_config_dir(tmp_path: Path) -> None:
    home, here = tmp_path / "home", tmp_path / "work" / "sub"
    here.mkdir(parents=True)
    env = {"HOME": str(home)}
    user = home / ".config" / "labhop" / "inventory.toml"
    user.parent.mkdir(parents=True)
    user.write_text("[groups]\ngpu = ['gpu1']\n")
    # From any directory (a sub-folder of a project, /tmp): the user's config dir.
    assert inventory_path(here, env) == user
    assert current_inventory(here, env).expand("@gpu") == ["gpu1"]
    xdg = tmp_path / "xdg"
    (xdg / "labhop").mkdir(parents=True)
    (xdg / "labhop" / "inventory.toml").write_text("")
    assert inventory_path(here, {**env, "XDG_CONFIG_HOME": str(xdg)}) == xdg / "labhop" / "inventory.toml"
    # ./inventory.toml comes before it, $LABHOP_INVENTORY before both.
    (here / "inventory.toml").write_text("")
    assert inventory_path(here, env) == here / "inventory.toml"
    assert inventory_path(here, {**env, "LABHOP_INVENTORY": str(user)}) == user


def test_a_labhop_inventory_naming_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nope\.toml: inventory file not found"):
        current_inventory(tmp_path, {"LABHOP_INVENTORY": str(tmp_path / "nope.toml"), "HOME": str(tmp_path)})
    assert current_inventory(tmp_path, {"HOME": str(tmp_path)}).hosts == {}  # no file at all: empty


def test_shipped_example_inventory_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "inventory.toml"
    inv = load_inventory(example, required=True)
    assert inv.path == example
