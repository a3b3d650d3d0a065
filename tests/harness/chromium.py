"""Open a URL in Debian's headless Chromium, as a person's browser would: the rendered DOM (after the page's
JavaScript ran) and, optionally, a PNG screenshot.  Or use it as a person does, through Playwright.

    path = chromium()                                   # /usr/bin/chromium or None
    dom = render(url, screenshot=tmp / "lab.png", wait_for="jp-LabShell")

    with browser_page() as page:                        # Playwright driving that same chromium
        page.goto(url); page.fill("#password_input", pw); page.click("#login_submit")
        out = notebook_cell(page, "print(6 * 7)")       # a new notebook, the cell typed, Shift+Enter

``wait_for``: a string the rendered DOM must contain; when it is missing the page is loaded again with
twice the virtual-time budget (a loaded machine renders JupyterLab's bundle late), at most ``tries``
times, and the last DOM is returned either way (the caller asserts).  Chromium runs with a throwaway
profile, no network of its own (no component updates, sync, QUIC) and, as root, without its sandbox.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["browser_page", "chromium", "notebook_cell", "playwright_available", "render"]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
         "--hide-scrollbars", "--no-default-browser-check", "--password-store=basic",
         # labhop's TLS certificate is self-signed; its fingerprint is checked in test_public_tls
         "--ignore-certificate-errors"]


def chromium() -> Optional[str]:
    """Debian's chromium (the package's wrapper script), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    # Its own process group: on a timeout the renderer and GPU helpers go too, not only the wrapper.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"chromium did not finish within {timeout:.0f}s: {err[-2000:]}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def render(url: str, *, screenshot: Optional[Path] = None, wait_for: Optional[str] = None,
           budget_ms: int = 15000, tries: int = 3, size: tuple[int, int] = (1280, 800),
           timeout: float = 120) -> str:
    """The DOM of ``url`` once rendered in headless Chromium (and a screenshot of it, if asked)."""
    binary = chromium()
    if binary is None:
        raise AssertionError("chromium is not installed (apt-get install chromium)")
    dom = ""
    for attempt in range(tries):
        with tempfile.TemporaryDirectory(prefix="labhop-chromium-") as profile:
            argv = [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                    f"--virtual-time-budget={budget_ms << attempt}", "--dump-dom"]
            if screenshot is not None:
                argv.append(f"--screenshot={screenshot}")
            result = _run([*argv, url], timeout)
        if result.returncode != 0:
            raise AssertionError(f"chromium exited {result.returncode} on {url}: {result.stderr[-2000:]}")
        dom = result.stdout
        if wait_for is None or wait_for in dom:
            break
    return dom


def playwright_available() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def browser_page(*, size: tuple[int, int] = (1280, 800)) -> Iterator["Page"]:
    """A Playwright page in Debian's chromium (no browser download: Playwright is only the driver here)."""
    from playwright.sync_api import sync_playwright

    binary = chromium()
    if binary is None:
        raise AssertionError("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as driver:
        # Playwright adds --headless and its own throwaway profile.
        browser = driver.chromium.launch(executable_path=binary,
                                         args=[f for f in FLAGS if f not in ("--headless", "--no-first-run")])
        try:
            yield browser.new_page(viewport={"width": size[0], "height": size[1]}, ignore_https_errors=True)
        finally:
            browser.close()


def notebook_cell(page: "Page", code: str, *, timeout: float = 90, tries: int = 2) -> str:
    """In the JupyterLab that ``page`` shows (logged in), reset to a fresh workspace: a new notebook from the
    launcher, ``code`` typed into its first cell, Shift+Enter; the text of the cell's output once it appears
    (its kernel runs wherever the server does, reached over the browser's own kernel websocket).

    Two things seen at load 10 on 2 CPUs, and handled as a person would: Shift+Enter that queues nothing (the
    prompt stays "[ ]:") is pressed again; a notebook whose first kernel JupyterLab replaced while it started
    (jupyter_server: "Kernel never reached an 'alive' state") is given up for another one, ``tries`` in all.
    What went wrong the first time is printed (pytest shows it with the test's output)."""
    failures: list[str] = []
    for _ in range(tries):
        try:
            return _notebook_cell_once(page, code, timeout)
        except AssertionError as exc:
            failures.append(str(exc))
            print(f"notebook_cell: no output in a new notebook, trying again: {exc}")
    raise AssertionError("\n".join(failures))


def _notebook_cell_once(page: "Page", code: str, timeout: float) -> str:
    from playwright.sync_api import Error

    try:
        return _steps(page, code, timeout * 1000)
    except Error as exc:
        raise AssertionError(str(exc)) from None


def _steps(page: "Page", code: str, ms: float) -> str:
    from playwright.sync_api import Error, expect

    # A fresh workspace: a restored one may hold notebooks whose kernels are gone, each asking for one in a dialog.
    origin = urllib.parse.urlsplit(page.url)
    page.goto(f"{origin.scheme}://{origin.netloc}/lab?reset", timeout=ms)
    page.wait_for_selector(".jp-LabShell", timeout=ms)
    # A new launcher whatever the workspace restored; `:visible`, as other notebooks may sit in hidden tabs.
    page.locator(".lm-TabBar-addButton[title='New Launcher']:visible").first.click(timeout=ms)
    page.locator(".jp-LauncherCard[data-category='Notebook']:visible").first.click(timeout=ms)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=ms)  # kernel ready
    cell = page.locator(".jp-Notebook .jp-Cell:visible").first
    editor = cell.locator(".cm-content")
    for attempt in range(3):
        # On a loaded machine the first click can land before the editor takes input: check what it holds.
        editor.click(timeout=ms)
        page.keyboard.insert_text(code)  # as pasted: no auto-closed brackets in the way
        try:
            expect(editor).to_contain_text(code[-20:], timeout=10_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
            page.keyboard.press("ControlOrMeta+A")
            page.keyboard.press("Delete")
    page.keyboard.press("Shift+Enter")
    output = cell.locator(".jp-OutputArea-output").first
    deadline = time.monotonic() + ms / 1000
    while True:
        try:
            output.wait_for(timeout=15_000)
            return output.inner_text()
        except Error as exc:
            prompt = cell.locator(".jp-InputPrompt").first.inner_text().strip()
            if time.monotonic() > deadline:
                raise AssertionError(f"no output from the notebook cell (its prompt: {prompt!r}): {exc}") from None
        if prompt == "[ ]:":  # never queued (the key went elsewhere while the page was busy): press it again
            editor.click(timeout=ms)
            page.keyboard.press("Shift+Enter")
