"""Nothing lost: a target that followed the seeds' blog recipes before labhop came.

Its user has ~/.jupyter full of old settings (NotebookApp ip 0.0.0.0, another port, their own
token and password, a base_url, the JSON forms too), a ~/.bashrc exporting JUPYTER_CONFIG_PATH to
more of the same, notebooks, JupyterLab settings and a ~/.rmate.rc of their own. System-wide
config is simulated in the venv's etc/jupyter (the real /etc/jupyter is the machine's, not the
test's): it sits on the same config path and, in a venv, even before the user's directory.

labhop's server must come up exactly as labhop configured it (address, port, auth, URL), and
every one of those files must be byte-identical afterwards. Own sshd: its HOME is only ours.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness.sshd import SshServer, start_sshd, write_ssh_config
from tests.support import Workspace, free_port, http_status, login, ssh

pytestmark = pytest.mark.integration

PASSWORD = "labhop-side password"
USER_TOKEN = "the-users-own-token"


def user_files(home: Path, user_port: int) -> dict[str, str]:
    notebook = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# my analysis"]}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    old_style = textwrap.dedent(f"""\
        # from a blog post, years ago
        c.NotebookApp.ip = '0.0.0.0'
        c.NotebookApp.port = {user_port}
        c.NotebookApp.open_browser = False
        c.NotebookApp.token = '{USER_TOKEN}'
        c.NotebookApp.password = 'sha1:0123456789ab:0123456789abcdef0123456789abcdef01234567'
        c.NotebookApp.port_retries = 50
        """)
    return {
        ".jupyter/jupyter_notebook_config.py": old_style,
        ".jupyter/jupyter_server_config.py": old_style + "c.ServerApp.token = ''\nc.ServerApp.base_url = '/user/'\n",
        ".jupyter/jupyter_config.py": "c.NotebookApp.base_url = '/user/'\nc.NotebookApp.ip = '0.0.0.0'\n",
        ".jupyter/jupyter_server_config.json": json.dumps({"ServerApp": {"ip": "0.0.0.0", "port": user_port,
                                                                         "token": ""}}),
        ".jupyter/jupyter_notebook_config.json": json.dumps({"NotebookApp": {"ip": "0.0.0.0", "port": user_port,
                                                                             "password_required": True}}),
        ".jupyter/lab/user-settings/@jupyterlab/apputils-extension/themes.jupyterlab-settings":
            json.dumps({"theme": "JupyterLab Dark"}),
        ".jupyter-extra/jupyter_server_config.py": old_style,
        ".jupyter-extra/jupyter_config.py": "c.NotebookApp.ip = '0.0.0.0'\nc.ServerApp.password_required = True\n",
        ".bashrc": "# mine\nexport JUPYTER_CONFIG_PATH=\"$HOME/.jupyter-extra\"\n",
        ".rmate.rc": "# my editor listens here\nport: 52777\n",
        "work/analysis.ipynb": json.dumps(notebook),
        "work/data.csv": "a,b\n1,2\n",
        "notes.md": "# notes\n",
    }


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """path -> (sha256, mtime_ns, mode) for every file below ``root``."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            st = path.stat()
            found[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns,
                                                  st.st_mode)
    return found


def system_config(user_port: int) -> dict[str, str]:
    """Old settings an admin put into a system-wide Jupyter config directory."""
    return {
        "jupyter_server_config.py": textwrap.dedent(f"""\
            c.NotebookApp.ip = '0.0.0.0'
            c.NotebookApp.port = {user_port}
            c.NotebookApp.port_retries = 50
            c.NotebookApp.base_url = '/system/'
            c.NotebookApp.token = ''
            c.ServerApp.token = ''
            c.ServerApp.password_required = True
            """),
        "jupyter_config.py": "c.NotebookApp.ip = '0.0.0.0'\nc.NotebookApp.base_url = '/system/'\n",
    }


@pytest.fixture(scope="module")
def lived_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    workdir = tmp_path_factory.mktemp("nothing-lost")
    server: SshServer = start_sshd(workdir, "oldbox")
    try:
        config = write_ssh_config(workdir / "ssh_config", [server])
        user_port, port = free_port(), free_port()
        for name, text in user_files(server.home, user_port).items():
            path = server.home / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (server.home / ".profile").write_text("# my profile\n")
        server.home.chmod(0o755)  # a home others may enter: labhop must not tighten it either
        ws = Workspace(root=workdir, inventory=workdir / "inventory.toml", ssh_config=config)
        ws.write_inventory(f"""
            [hosts.oldbox]
            port = {port}
            prefix = "~/.labhop"
        """)
        before = snapshot(server.home)
        yield {"ws": ws, "server": server, "config": config, "port": port, "user_port": user_port,
               "before": before, "prefix": server.home / ".labhop"}
    finally:
        try:
            Workspace(root=workdir, inventory=workdir / "inventory.toml",
                      ssh_config=workdir / "ssh_config").fab("stop", host="oldbox")
        finally:
            server.stop()


def listening(scene: dict) -> list[str]:
    """Local addresses listening on the two ports, as ss on the target reports them."""
    out = ssh(scene["config"], "oldbox", "ss -Hltn").stdout
    ports = {str(scene["port"]), str(scene["user_port"])}
    return sorted(line.split()[3] for line in out.splitlines() if line.split()[3].rsplit(":", 1)[1] in ports)


def test_the_old_setup_is_really_visible_to_the_target_shell(lived_in) -> None:
    env = ssh(lived_in["config"], "oldbox", "echo $JUPYTER_CONFIG_PATH").stdout.strip()
    assert env == f"{lived_in['server'].home}/.jupyter-extra"


def test_localhost_server_is_exactly_labhops(lived_in) -> None:
    ws, port = lived_in["ws"], lived_in["port"]
    ws.fab("provision", host="oldbox").ok()
    system_dir = lived_in["prefix"] / "venv" / "etc" / "jupyter"
    for name, text in system_config(lived_in["user_port"]).items():
        (system_dir / name).write_text(text)
    out = ws.fab("serve", host="oldbox").ok().stdout
    url = re.search(r"open: (\S+)", out).group(1)
    token = url.split("token=", 1)[1]
    assert url == f"http://127.0.0.1:{port}/lab?token={token}" and token != USER_TOKEN
    assert listening(lived_in) == [f"127.0.0.1:{port}"]
    base = f"http://127.0.0.1:{port}"
    assert http_status(f"{base}/api/contents?token={token}") == 200
    assert http_status(f"{base}/api/contents") == 403
    assert http_status(f"{base}/api/contents?token={USER_TOKEN}") == 403
    assert http_status(f"{base}/lab?token={token}") == 200  # no base_url from anyone's old config
    # JupyterLab still sees the user's own lab settings
    theme = f"{base}/lab/api/settings/@jupyterlab/apputils-extension:themes?token={token}"
    import urllib.request
    with urllib.request.urlopen(theme, timeout=10) as response:
        assert json.loads(response.read())["raw"] == json.dumps({"theme": "JupyterLab Dark"})


def test_public_server_is_exactly_labhops(lived_in) -> None:
    ws, port = lived_in["ws"], lived_in["port"]
    ws.fab("serve", "--public", host="oldbox", env={"LABHOP_PASSWORD": PASSWORD}).ok()
    assert listening(lived_in) == [f"0.0.0.0:{port}"]
    base = f"https://127.0.0.1:{port}"
    assert http_status(f"{base}/api/contents") == 403
    assert http_status(f"{base}/api/contents?token=") == 403
    assert login(base, PASSWORD) == (200, 200)
    assert login(base, "wrong")[0] == 401


def test_rmate_leaves_the_users_rc_alone(lived_in) -> None:
    ws = lived_in["ws"]
    opened = ws.fab("rmate", "--background", "--editor-port", str(free_port()), host="oldbox")
    try:
        opened.ok()
        assert "yours" in opened.output or "left alone" in opened.output
    finally:
        ws.fab("rmate", "--close", host="oldbox")


def test_every_file_of_the_user_is_as_it_was(lived_in) -> None:
    ws = lived_in["ws"]
    ws.fab("stop", host="oldbox").ok()
    ws.fab("provision", host="oldbox").ok()
    home = lived_in["server"].home
    before, after = lived_in["before"], snapshot(home)
    for name, (digest, mtime, mode) in before.items():
        assert name in after, f"~/{name} was deleted"
        if name == ".profile":  # labhop appends its PATH block, after the user's lines
            assert (home / name).read_text().startswith("# my profile\n")
            continue
        assert after[name] == (digest, mtime, mode), f"~/{name} was changed"
    new = sorted(name for name in after if name not in before)
    # labhop's prefix and rmate link, caches, Jupyter's runtime files, npm's logs (jupyter_lsp asks npm
    # for language servers): new files only, beside the user's.
    allowed = (".labhop/", ".cache/", ".local/share/jupyter/", ".local/bin/", ".ipython/", ".npm/_logs/")
    assert [name for name in new if not name.startswith(allowed)] == []
    assert not any(name.startswith(".jupyter/") for name in new), new
    assert os.stat(home).st_mode & 0o777 == 0o755
