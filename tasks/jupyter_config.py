"""Render labhop's ``jupyter_server_config.py`` and read back what it holds.

The file is the single source of truth on the target: re-running ``serve``
compares the freshly rendered text with it, reusing the stored token and the
stored bcrypt hash (when the password still matches), so an unchanged config
renders byte-identical and nothing is rewritten or restarted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

# How the port line starts: the probe finds the remembered port with it (tasks/serving.py).
PORT_LINE = "c.ServerApp.port = "

# The settings an old NotebookApp config could move away from labhop's (see render); the probe looks
# for them on the server's config path.
NOTEBOOK_APP_PINS = ("ip", "port", "port_retries", "base_url", "root_dir", "certfile", "keyfile", "allow_root")

HEADER = "# Written by labhop. Edits are overwritten: change settings with `fab serve` flags or inventory.toml.\n"

# jupyter_server 2.x cannot verify bcrypt hashes: this subclass checks "$2b$" hashes
# with bcrypt (installed in the venv by provision) and defers to the stock check
# for argon2/sha1 hashes a user may paste.
_IDENTITY_PROVIDER = '''
from jupyter_server.auth.identity import PasswordIdentityProvider


class LabhopPasswordIdentityProvider(PasswordIdentityProvider):
    """Password login that understands bcrypt hashes."""

    def passwd_check(self, password):
        hashed = self.hashed_password or ""
        if hashed.startswith(("$2a$", "$2b$", "$2y$")):
            import bcrypt

            secret = password.encode("utf-8")
            if len(secret) > 72:  # bcrypt 5 raises past 72 bytes: just refuse.
                return False
            return bcrypt.checkpw(secret, hashed.encode("ascii"))
        return super().passwd_check(password)


c.ServerApp.identity_provider_class = LabhopPasswordIdentityProvider
'''


def variant_name(public: bool) -> str:
    return "public" if public else "localhost"


def scheme_of(tls: bool) -> str:
    return "https" if tls else "http"


_DATA_PATH = '''
import os  # noqa: E402
_path = [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p and p != {data_dir!r}]
os.environ["JUPYTER_PATH"] = os.pathsep.join([{data_dir!r}] + _path)
'''


@dataclass(frozen=True)
class ServerSettings:
    ip: str
    port: int
    root_dir: str
    public: bool
    token: Optional[str] = None
    hashed_password: Optional[str] = None
    allow_root: bool = False
    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    data_dir: Optional[str] = None  # first on Jupyter's data path: labhop's kernelspecs (tasks/kernels.py)
    # Old NotebookApp settings on the server's config path (the probe found some): repeat labhop's
    # values under NotebookApp so that they win (see render).
    pin_notebook_app: bool = False

    @property
    def variant(self) -> str:
        return variant_name(self.public)

    @property
    def scheme(self) -> str:
        return scheme_of(bool(self.certfile))


@dataclass(frozen=True)
class StoredSecrets:
    token: Optional[str] = None
    hashed_password: Optional[str] = None


def render(settings: ServerSettings) -> str:
    lines = [HEADER, "c = get_config()  # noqa: F821\n"]

    def setting(name: str, value: object) -> None:
        lines.append(f"c.{name} = {value!r}\n")

    setting("ServerApp.ip", settings.ip)
    setting("ServerApp.port", settings.port)
    setting("ServerApp.port_retries", 0)
    setting("ServerApp.open_browser", False)
    setting("ServerApp.root_dir", settings.root_dir)
    if settings.allow_root:
        setting("ServerApp.allow_root", True)
    if settings.certfile:
        setting("ServerApp.certfile", settings.certfile)
        setting("ServerApp.keyfile", settings.keyfile)
    # Old NotebookApp.* settings anywhere on Jupyter's config path (/etc/jupyter, the venv's
    # etc/jupyter, a jupyter_config.py) reach ServerApp through notebook_shim and beat the lines
    # above whatever their priority. The same values under NotebookApp here, the highest-priority
    # file, keep labhop's. notebook_shim logs a "has moved" warning for each at start, so they are
    # written only when the probe found such settings (serve says where).
    pins: list[tuple[str, object]] = [("ip", settings.ip), ("port", settings.port), ("port_retries", 0),
                                      ("base_url", "/"), ("root_dir", settings.root_dir),
                                      ("certfile", settings.certfile or ""), ("keyfile", settings.keyfile or "")]
    if settings.allow_root:
        pins.append(("allow_root", True))
    assert {name for name, _ in pins} <= set(NOTEBOOK_APP_PINS)
    for name, value in pins if settings.pin_notebook_app else []:
        setting(f"NotebookApp.{name}", value)
    if settings.data_dir:
        # The user's environments as kernels (DATA_DIR/kernels): first on Jupyter's data path, before
        # ~/.local/share/jupyter, which stays the user's. KernelSpecManager.kernel_dirs is not
        # configurable; it is JUPYTER_PATH as this file leaves it, fixed when the server starts. The
        # directories are rescanned on every kernelspec request: kernels added later need no restart.
        lines.append(_DATA_PATH.format(data_dir=settings.data_dir))
    if settings.public:
        if not settings.hashed_password:
            raise ValueError("the public variant needs a password hash")
        # No token login on a public server: the password is the only way in.
        setting("IdentityProvider.token", "")
        setting("PasswordIdentityProvider.hashed_password", settings.hashed_password)
        setting("PasswordIdentityProvider.password_required", True)
        setting("PasswordIdentityProvider.allow_password_change", False)
        lines.append(_IDENTITY_PROVIDER)
    else:
        if not settings.token:
            raise ValueError("the localhost variant needs a token")
        setting("IdentityProvider.token", settings.token)
        setting("PasswordIdentityProvider.hashed_password", "")
        setting("PasswordIdentityProvider.password_required", False)  # whatever an older config says
    return "".join(lines)


_ASSIGNMENT = re.compile(r"^c\.(?P<name>[\w.]+) = (?P<value>'[^'\n]*'|\"[^\"\n]*\"|\S+)\s*$", re.M)


def read_settings(text: Optional[str]) -> dict[str, str]:
    """The ``c.X.y = literal`` assignments of a config labhop wrote (raw literals)."""
    if not text:
        return {}
    return {m.group("name"): m.group("value") for m in _ASSIGNMENT.finditer(text)}


def stored_secrets(text: Optional[str]) -> StoredSecrets:
    values = read_settings(text)

    def string(name: str) -> Optional[str]:
        raw = values.get(name)
        if raw is None or len(raw) < 2 or raw[0] not in "'\"":
            return None
        return raw[1:-1] or None

    return StoredSecrets(token=string("IdentityProvider.token"),
                         hashed_password=string("PasswordIdentityProvider.hashed_password"))


def stored_port(text: Optional[str]) -> Optional[int]:
    raw = read_settings(text).get("ServerApp.port")
    return int(raw) if raw and raw.isdigit() else None


@dataclass(frozen=True)
class StoredServer:
    """The server a config labhop wrote describes, read back (status, URL, tunnel)."""

    ip: str
    port: Optional[int]
    public: bool
    tls: bool
    token: Optional[str]

    @property
    def variant(self) -> str:
        return variant_name(self.public)

    @property
    def scheme(self) -> str:
        return scheme_of(self.tls)


def stored_server(text: Optional[str]) -> StoredServer:
    values = read_settings(text)
    return StoredServer(ip=values.get("ServerApp.ip", "'127.0.0.1'").strip("'\""), port=stored_port(text),
                        public="ServerApp.identity_provider_class" in values, tls="ServerApp.certfile" in values,
                        token=stored_secrets(text).token)
