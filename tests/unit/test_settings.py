from __future__ import annotations

import pytest

from labhop.errors import UsageError
from labhop.inventory import HostEntry
from labhop.settings import resolve_settings


def test_defaults_are_localhost_8888() -> None:
    s = resolve_settings(None)
    assert (s.ip, s.port, s.public, s.prefix) == ("127.0.0.1", 8888, False, "~/.labhop")


def test_cli_beats_inventory() -> None:
    entry = HostEntry(name="a", port=9000, root_dir="/data")
    s = resolve_settings(entry, port="9100")
    assert s.port == 9100 and s.root_dir == "/data"


def test_public_listens_everywhere_by_default() -> None:
    assert resolve_settings(None, public=True).ip == "0.0.0.0"
    assert resolve_settings(HostEntry(name="a", public=True)).ip == "0.0.0.0"


@pytest.mark.parametrize("kwargs, message", [
    ({"port": "http"}, "--port: 'http' is not a port number"),
    ({"port": "0"}, "--port: port 0 is out of range 1-65535"),
    ({"port": "65536"}, "out of range"),
    ({"ip": "nowhere"}, "--ip: 'nowhere' is not an IP address"),
    ({"ip": "0.0.0.0"}, "needs --public"),
    ({"public": True, "ip": "127.0.0.1"}, "--public conflicts with --ip 127.0.0.1"),
    ({"public": True, "ip": "::1"}, "--public conflicts with --ip ::1"),
])
def test_bad_flags(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        resolve_settings(None, **kwargs)


def test_conflicts_name_where_each_value_came_from() -> None:
    with pytest.raises(UsageError, match="--public conflicts with `ip` in the inventory 127.0.0.1"):
        resolve_settings(HostEntry(name="a", ip="127.0.0.1"), public=True)
    with pytest.raises(UsageError, match=r"`public = true` in the inventory conflicts with --ip 127.0.0.1"):
        resolve_settings(HostEntry(name="a", public=True), ip="127.0.0.1")
    with pytest.raises(UsageError, match="`ip` in the inventory 10.0.0.5 listens beyond localhost"):
        resolve_settings(HostEntry(name="a", ip="10.0.0.5"))
