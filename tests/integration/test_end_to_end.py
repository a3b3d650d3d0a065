"""The team rule, end to end: the URL labhop prints opens JupyterLab in headless Chromium, and a cell runs
over the kernel websocket, on the target.

laptop -> jump -> target (network namespaces: the target is reachable only through the jump host):
`fab -H target serve`, `fab -H target tunnel --background`, then the printed URL in Debian's chromium
(rendered DOM + a screenshot), then a kernel started at that URL runs a cell whose output says where it
ran (the target's network namespace, the venv labhop made there).  Then the same for `serve --public`:
the login form with the password, the cell; and in chromium (Playwright): the login page over TLS, the
password typed in, JupyterLab, a new notebook whose cell runs on the target.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness.chromium import browser_page, chromium, notebook_cell, playwright_available, render
from tests.harness.kernel import JupyterClient, run_cell
from tests.harness.topology import Topology
from tests.support import FabResult, Workspace, free_port, need

pytestmark = pytest.mark.integration

PASSWORD = "end-to-end pässword"
# Where the cell ran: the kernel's network namespace (an inode), its interfaces, its Python, its host name.
WHERE = ("import os, socket, sys; "
         "print(os.stat('/proc/self/ns/net').st_ino, [n for _, n in socket.if_nameindex()], sys.prefix, "
         "socket.gethostname(), 6 * 7)")


@dataclass
class Lab:
    ws: Workspace
    topology: Topology
    state: Path  # XDG_STATE_HOME on the laptop (tunnel records)
    prefix: str
    marker: str  # a file only the target's home has
    served: str = ""  # what `fab serve` printed
    url: str = ""  # what `fab tunnel --background` printed: the URL a person opens here

    def fab(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> FabResult:
        return self.ws.fab(*args, host="target", env={"XDG_STATE_HOME": str(self.state), **(env or {})},
                           timeout=timeout)

    def tunnel_url(self) -> str:
        out = self.fab("tunnel", "--background").ok().stdout
        found = re.findall(r"open: (https?://127\.0\.0\.1:\d+/lab\S*)", out)
        assert found, out
        return str(found[-1])


@pytest.fixture(scope="module")
def lab(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    need(topology.isolated or os.environ.get("LABHOP_TEST_ALLOW_LOOPBACK_TOPOLOGY") == "1",
         f"the jump topology is not isolated: {topology.reason}")
    root = tmp_path_factory.mktemp("end-to-end")
    home = topology.target.home
    prefix = f"{home}/.labhop-e2e"
    ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=topology.ssh_config)
    # `target` is the ssh_config alias with ProxyJump jump: the inventory only says where labhop goes.
    ws.write_inventory(f"""
        [hosts.target]
        port = {free_port()}
        prefix = "{prefix}"
        bin_dir = "{home}/.local/bin-e2e"
    """)
    marker = f"only-on-the-target-{secrets.token_hex(4)}.txt"
    topology.run("target", f"touch ~/{marker}")
    scene = Lab(ws, topology, root / "state", prefix, marker)
    try:
        scene.served = scene.fab("serve", timeout=900).ok().stdout
        scene.url = scene.tunnel_url()
        yield scene
    finally:
        scene.fab("tunnel", "--close")
        for record in (scene.state / "labhop").glob("*.json"):  # whatever a failed --close left
            try:
                os.kill(json.loads(record.read_text())["pid"], signal.SIGTERM)
            except (OSError, ValueError, KeyError):
                pass
        scene.fab("stop")
        topology.run("target", f"rm -f ~/{marker}", check=False)


def evidence(lab: Lab) -> str:
    """The tunnel's log and state here, the server's log there: what a failed browser step saw on the way."""
    lines = [f"--- {path.name}:\n{path.read_text(errors='replace')[-3000:]}"
             for path in sorted((lab.state / "labhop").glob("*")) if path.is_file()]
    lines.append(f"--- fab logs:\n{lab.fab('logs', '--lines', '120').output}")
    return "\n".join(lines)


def keep(path: Path) -> None:
    """LABHOP_TEST_SCREENSHOTS=DIR keeps what chromium showed (pytest's tmp dirs rotate away)."""
    if os.environ.get("LABHOP_TEST_SCREENSHOTS"):
        Path(os.environ["LABHOP_TEST_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, os.environ["LABHOP_TEST_SCREENSHOTS"])


def has_class(dom: str, name: str) -> bool:
    """Does an element of the rendered DOM carry this CSS class?"""
    return re.search(rf'class="[^"]*(?<![\w-]){re.escape(name)}(?![\w-])', dom) is not None


def assert_ran_on_the_target(out: str, lab: Lab) -> None:
    netns_inode, rest = out.split(" ", 1)
    assert rest.rstrip().endswith(" 42"), out
    assert f" {lab.prefix}/venv " in rest, f"the kernel's sys.prefix is not labhop's venv on the target: {out}"
    hostname = lab.topology.run("target", "hostname").stdout.strip()
    assert f" {hostname} 42" in rest, out
    if lab.topology.target_netns:  # the kernel lives in the target's namespace, not the laptop's
        assert int(netns_inode) == os.stat(f"/run/netns/{lab.topology.target_netns}").st_ino, out
        assert int(netns_inode) != os.stat("/proc/self/ns/net").st_ino
        assert "['lo', 'eth0']" in rest, out


def test_serve_and_tunnel_print_a_url_here(lab: Lab) -> None:
    assert re.search(r"open: http://127\.0\.0\.1:\d+/lab\?token=", lab.served), lab.served
    assert lab.url.startswith("http://127.0.0.1:") and "/lab?token=" in lab.url, lab.url


def test_the_printed_url_opens_jupyterlab_in_chromium(lab: Lab, tmp_path: Path) -> None:
    need(chromium() is not None, "Debian's chromium is not installed (.ci/run installs it)")
    # JupyterLab's shell and launcher, and the target's home in its file browser
    shot = tmp_path / "jupyterlab.png"
    dom = render(lab.url, screenshot=shot, wait_for=lab.marker)
    (tmp_path / "jupyterlab.html").write_text(dom)  # beside the screenshot, for a person to look at
    keep(shot)
    keep(tmp_path / "jupyterlab.html")
    assert "<title>JupyterLab</title>" in dom and has_class(dom, "jp-LabShell"), dom[-3000:]
    assert 'id="jp-main-dock-panel"' in dom and 'id="filebrowser"' in dom and has_class(dom, "jp-Launcher")
    assert lab.marker in dom, "the file browser does not show the target's home"
    assert 'id="password_input"' not in dom
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    # ...and without the token, the login page, not JupyterLab
    denied = render(lab.url.split("?")[0], wait_for="password_input")
    assert 'id="password_input"' in denied and not has_class(denied, "jp-LabShell")


def test_a_cell_runs_on_the_target_over_the_kernel_websocket(lab: Lab) -> None:
    out = run_cell(lab.url, None, WHERE)
    print(f"the cell printed: {out}")
    assert_ran_on_the_target(out, lab)
    with pytest.raises(Exception, match="403"):
        run_cell(lab.url.split("?")[0], "not-the-token", "print(1)")


def test_public_login_over_tls_then_a_cell_runs_on_the_target(lab: Lab, tmp_path: Path) -> None:
    served = lab.fab("serve", "--public", env={"LABHOP_PASSWORD": PASSWORD}).ok()
    assert "open: https://" in served.stdout and PASSWORD not in served.output
    lab.fab("tunnel", "--close").ok()  # the forward to the token server: reopen it for the TLS one
    url = lab.tunnel_url()
    assert url.startswith("https://127.0.0.1:") and url.endswith("/lab"), url

    # The login form with the password lets the kernel run the cell; a wrong password does not.
    out = run_cell(url, None, WHERE, password=PASSWORD)
    print(f"the cell printed: {out}")
    assert_ran_on_the_target(out, lab)
    with pytest.raises(AssertionError, match="login .* refused: HTTP 401"):
        JupyterClient(url, password="wrong password")

    # As a person: chromium gets the login page over TLS (labhop's own self-signed certificate), the password
    # goes into the form, JupyterLab opens, a new notebook's cell runs over the browser's own kernel websocket.
    need(chromium() is not None, "Debian's chromium is not installed (.ci/run installs it)")
    need(playwright_available(), "playwright (the test extras) is not installed")
    failed: list[str] = []
    with browser_page() as page:
        page.on("requestfailed", lambda r: failed.append(f"{r.method} {r.url}: {r.failure}"))
        page.goto(url)
        page.wait_for_selector("#password_input")
        page.screenshot(path=tmp_path / "login.png")
        page.fill("#password_input", PASSWORD)
        page.click("#login_submit")
        try:
            page.wait_for_selector(".jp-LabShell", timeout=90_000)
            out = notebook_cell(page, WHERE)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nrequests that failed in chromium: {failed}\n{evidence(lab)}") from None
        finally:
            page.screenshot(path=tmp_path / "notebook.png")  # what the page showed, also when it failed
            keep(tmp_path / "notebook.png")
    keep(tmp_path / "login.png")
    print(f"the notebook cell in chromium printed: {out}")
    assert_ran_on_the_target(out, lab)
