from __future__ import annotations

import bcrypt
import pytest

from labhop.jupyter_config import StoredServer, ServerSettings, render, stored_port, stored_secrets, stored_server
from labhop.server import url_for


def test_localhost_variant_round_trips_token() -> None:
    text = render(ServerSettings(ip="127.0.0.1", port=8888, root_dir="/home/a", public=False, token="t0k"))
    assert "c.ServerApp.ip = '127.0.0.1'" in text
    assert "c.ServerApp.port_retries = 0" in text
    assert "c.ServerApp.open_browser = False" in text
    assert stored_secrets(text).token == "t0k"
    assert stored_secrets(text).hashed_password is None
    assert stored_port(text) == 8888
    assert url_for(text, "ignored") == "http://127.0.0.1:8888/lab?token=t0k"
    assert url_for(text, "ignored", local_port=9999) == "http://127.0.0.1:9999/lab?token=t0k"
    compile(text, "jupyter_server_config.py", "exec")


def test_public_variant_has_bcrypt_provider_and_no_token() -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    text = render(ServerSettings(ip="0.0.0.0", port=443, root_dir="/srv", public=True, hashed_password=hashed,
                                 certfile="/p/cert.pem", keyfile="/p/key.pem"))
    assert "c.IdentityProvider.token = ''" in text
    assert "LabhopPasswordIdentityProvider" in text
    assert stored_secrets(text).hashed_password == hashed
    assert stored_secrets(text).token is None
    assert url_for(text, "gpu.example.org") == "https://gpu.example.org:443/lab"
    compile(text, "jupyter_server_config.py", "exec")


def test_variants_refuse_missing_credentials() -> None:
    with pytest.raises(ValueError):
        render(ServerSettings(ip="0.0.0.0", port=1, root_dir="/", public=True))
    with pytest.raises(ValueError):
        render(ServerSettings(ip="127.0.0.1", port=1, root_dir="/", public=False))


def test_quotes_in_paths_stay_literal() -> None:
    text = render(ServerSettings(ip="127.0.0.1", port=1, root_dir="/it's here", public=False, token="t"))
    namespace: dict = {}

    class Section(dict):
        def __getattr__(self, name):
            return self.setdefault(name, Section())

        def __setattr__(self, name, value):
            self[name] = value

    c = Section()
    exec(compile(text, "cfg", "exec"), {"get_config": lambda: c, **namespace})
    assert c["ServerApp"]["root_dir"] == "/it's here"


@pytest.mark.parametrize("settings", [
    ServerSettings(ip="127.0.0.1", port=8888, root_dir="/h", public=False, token="t0k"),
    ServerSettings(ip="::1", port=8889, root_dir="/h", public=False, token="t1k", certfile="/c", keyfile="/k"),
    ServerSettings(ip="0.0.0.0", port=443, root_dir="/srv", public=True, hashed_password="$2b$04$x",
                   certfile="/p/cert.pem", keyfile="/p/key.pem"),
    ServerSettings(ip="10.0.0.5", port=8890, root_dir="/srv", public=True, hashed_password="$2b$04$y"),
])
def test_the_stored_server_reads_back_what_was_rendered(settings: ServerSettings) -> None:
    stored = stored_server(render(settings))
    assert stored == StoredServer(ip=settings.ip, port=settings.port, public=settings.public,
                                  tls=bool(settings.certfile), token=settings.token)
    assert (stored.variant, stored.scheme) == (settings.variant, settings.scheme)


def test_no_config_is_no_server() -> None:
    assert stored_server(None) == StoredServer(ip="127.0.0.1", port=None, public=False, tls=False, token=None)
