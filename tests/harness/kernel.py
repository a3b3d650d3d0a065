"""Run a cell in a real Jupyter kernel, the way JupyterLab does: REST to start the kernel, then the
Jupyter messaging protocol over the single websocket ``/api/kernels/ID/channels``.

    run_cell(base_url, token, code) -> str            # stdout (+ execute_result text) of the cell
    run_cell(base_url, None, code, password="...")    # --public: log in through the login form first

``base_url`` is scheme://host:port (a trailing ``/lab`` or ``?token=...`` is cut off, so the URL labhop
printed can be passed as it is).  https is not verified: labhop's self-signed certificate is
checked elsewhere (test_public_tls); here the question is whether code runs.  The kernel is
shut down afterwards.  A cell that raises is a :class:`CellError` naming the exception.

Only tornado (which jupyter_server brings) and the standard library: no mocks, no browser.
"""
from __future__ import annotations

import asyncio
import http.cookiejar
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone
from typing import Any, Optional

__all__ = ["CellError", "JupyterClient", "run_cell", "split_url"]


class CellError(AssertionError):
    """The cell raised (ename: evalue), or the kernel did not answer in time."""


def split_url(url: str) -> tuple[str, Optional[str]]:
    """'http://h:p/lab?token=T' -> ('http://h:p', 'T'); any path is dropped."""
    parts = urllib.parse.urlsplit(url)
    token = urllib.parse.parse_qs(parts.query).get("token", [None])[0]
    return f"{parts.scheme}://{parts.netloc}", token


class JupyterClient:
    """A logged-in HTTP client of one Jupyter server: token in a header, or password login with cookies."""

    def __init__(self, base_url: str, token: Optional[str] = None, *, password: Optional[str] = None,
                 timeout: float = 30) -> None:
        self.base_url, url_token = split_url(base_url)
        self.token = token or url_token
        self.timeout = timeout
        self.context = ssl._create_unverified_context()  # labhop's self-signed cert; verified in test_public_tls
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  urllib.request.HTTPSHandler(context=self.context))
        if password is not None:
            self.login(password)

    def login(self, password: str) -> None:
        """POST the login form as a browser does (the _xsrf cookie echoed in the form)."""
        self.opener.open(f"{self.base_url}/login", timeout=self.timeout).read()
        data = urllib.parse.urlencode({"password": password, "_xsrf": self._xsrf()}).encode()
        try:
            self.opener.open(f"{self.base_url}/login?next=%2Fapi%2Fstatus", data, timeout=self.timeout).read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"login at {self.base_url} refused: HTTP {exc.code}") from None

    def _xsrf(self) -> str:
        return next((c.value or "" for c in self.jar if c.name == "_xsrf"), "")

    def headers(self) -> dict[str, str]:
        headers = {"X-XSRFToken": self._xsrf()} if self._xsrf() else {}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.jar)
        if cookies:
            headers["Cookie"] = cookies
        return headers

    def api(self, method: str, path: str, body: Optional[dict[str, Any]] = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method,
                                         headers={**self.headers(), "Content-Type": "application/json"})
        with self.opener.open(request, timeout=self.timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def start_kernel(self, name: Optional[str] = None) -> str:
        return str(self.api("POST", "/api/kernels", {"name": name} if name else {})["id"])

    def shutdown_kernel(self, kernel_id: str) -> None:
        try:
            self.api("DELETE", f"/api/kernels/{kernel_id}")
        except (urllib.error.URLError, OSError):
            pass  # the server may be gone already; nothing of ours is left behind then

    def execute(self, kernel_id: str, code: str, *, timeout: float = 60) -> str:
        return asyncio.run(self._execute(kernel_id, code, timeout))

    async def _execute(self, kernel_id: str, code: str, timeout: float) -> str:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        session = uuid.uuid4().hex
        ws_base = self.base_url.replace("http", "ws", 1)  # http -> ws, https -> wss
        request = HTTPRequest(f"{ws_base}/api/kernels/{kernel_id}/channels?session_id={session}",
                              headers=self.headers(), validate_cert=False, request_timeout=timeout,
                              connect_timeout=timeout)
        conn = await asyncio.wait_for(websocket_connect(request), timeout)
        msg_id = uuid.uuid4().hex
        conn.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session, "username": "labhop-test",
                       "version": "5.3", "date": datetime.now(timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        out: list[str] = []
        replied = idle = False
        try:
            # Done when the shell reply came and iopub went idle for our request (all output is in by then).
            while not (replied and idle):
                raw = await asyncio.wait_for(conn.read_message(), timeout)
                if raw is None:
                    raise CellError(f"kernel {kernel_id}: the websocket closed before the cell finished; "
                                    f"output so far: {''.join(out)!r}")
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["header"]["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind in ("execute_result", "display_data"):
                    out.append(content["data"].get("text/plain", "") + "\n")
                elif kind == "error":
                    raise CellError(f"the cell raised {content['ename']}: {content['evalue']}")
                elif kind == "execute_reply":
                    replied = True
                elif kind == "status" and content["execution_state"] == "idle":
                    idle = True
        except asyncio.TimeoutError:
            raise CellError(f"kernel {kernel_id}: no answer within {timeout:.0f}s; output so far: {''.join(out)!r}") \
                from None
        finally:
            conn.close()
        return "".join(out)


def run_cell(base_url: str, token: Optional[str], code: str, *, password: Optional[str] = None,
             kernel: Optional[str] = None, timeout: float = 60) -> str:
    """Start a kernel on the server at ``base_url``, run ``code`` in it, shut it down; the cell's output."""
    client = JupyterClient(base_url, token, password=password, timeout=timeout)
    kernel_id = client.start_kernel(kernel)
    try:
        return client.execute(kernel_id, code, timeout=timeout)
    finally:
        client.shutdown_kernel(kernel_id)
