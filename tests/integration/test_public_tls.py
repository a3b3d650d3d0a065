"""--public over a real sshd: TLS by default with a certificate made for the host, the fingerprint
printed is the one served, auth answers 403/401/200 through TLS, re-runs keep the certificate,
--certfile/--keyfile bring your own, --insecure-http opts out loudly."""
from __future__ import annotations

import hashlib
import json
import re
import socket
import ssl
from pathlib import Path

import pytest

from labhop.certs import generate, wanted_names
from tests.support import Workspace, free_port, http_status, login, ssh

pytestmark = pytest.mark.integration

PASSWORD = "tls-test pässword"
ENV = {"LABHOP_PASSWORD": PASSWORD}


@pytest.fixture(scope="module")
def public(sshd_server, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("public-tls")
    ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=sshd_server.ssh_config)
    port = free_port()
    prefix = f"{sshd_server.home}/.labhop-tls"
    ws.write_inventory(f"""
        [hosts.target]
        port = {port}
        prefix = "{prefix}"
    """)
    try:
        yield ws, port, prefix, sshd_server
    finally:
        ws.fab("stop", host="target")


def served_fingerprint(port: int) -> str:
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=10)
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def printed_fingerprint(output: str) -> str:
    found = re.findall(r"SHA-256 fingerprint ([0-9A-F:]{95})", output)
    assert len(found) == 1, output
    return found[0]


def pid_of(ws: Workspace) -> int:
    return json.loads(ws.fab("status", "--json", host="target").ok().stdout)["results"][0]["pid"]


def test_public_serves_tls_with_a_certificate_for_this_host(public) -> None:
    ws, port, prefix, server = public
    out = ws.fab("serve", "--public", host="target", env=ENV).ok()
    assert f"open: https://127.0.0.1:{port}/lab" in out.stdout
    assert "self-signed certificate (new: none on the target yet)" in out.stdout
    assert printed_fingerprint(out.stdout) == served_fingerprint(port)
    assert PASSWORD not in out.output

    # The certificate names the host as labhop reached it: a client that trusts only this
    # certificate (read from the target, not from the server) verifies it by those names.
    cert_pem = ssh(server.ssh_config, "target", f"cat {prefix}/tls/cert.pem").stdout
    context = ssl.create_default_context(cadata=cert_pem)
    for name in ("127.0.0.1", "target", "localhost"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")

    modes = ssh(server.ssh_config, "target", f"stat -c '%a %n' {prefix}/tls {prefix}/tls/key.pem {prefix}/tls/cert.pem")
    expected = [f"700 {prefix}/tls", f"600 {prefix}/tls/key.pem", f"644 {prefix}/tls/cert.pem"]
    assert modes.stdout.split("\n")[:3] == expected


def test_auth_through_tls(public) -> None:
    ws, port, _, _ = public
    base = f"https://127.0.0.1:{port}"
    assert http_status(f"{base}/api/contents") == 403
    assert http_status(f"{base}/api/contents?token=") == 403
    assert login(base, "wrong password")[0] == 401
    assert login(base, PASSWORD) == (200, 200)
    with pytest.raises(OSError):  # nothing in clear text on that port
        http_status(f"http://127.0.0.1:{port}/api/contents", timeout=5)
    status = json.loads(ws.fab("status", "--json", host="target").ok().stdout)["results"][0]
    assert status["variant"] == "public" and status["url"] == f"https://127.0.0.1:{port}/lab"
    assert ws.fab("url", host="target").ok().stdout.strip() == f"https://127.0.0.1:{port}/lab"


def test_a_second_run_keeps_the_certificate_and_the_server(public) -> None:
    ws, port, _, _ = public
    before, pid = served_fingerprint(port), pid_of(ws)
    out = ws.fab("serve", "--public", host="target", env=ENV).ok()
    assert "kept from an earlier run" in out.stdout
    assert "already running with this config" in out.stdout
    assert "changed " not in out.stdout
    assert printed_fingerprint(out.stdout) == before == served_fingerprint(port)
    assert pid_of(ws) == pid
    document = json.loads(ws.fab("serve", "--public", "--json", host="target", env=ENV).ok().stdout)
    assert document["results"][0]["tls_fingerprint"] == before


def test_bad_tls_flags_fail_in_one_line_and_change_nothing(public, tmp_path: Path) -> None:
    ws, port, _, _ = public
    before, pid = served_fingerprint(port), pid_of(ws)
    cases = [
        (["--certfile", str(tmp_path / "missing.pem"), "--keyfile", str(tmp_path / "k.pem")],
         f"--certfile {tmp_path / 'missing.pem'}: No such file or directory"),
        (["--certfile", "a.pem"], "--certfile and --keyfile go together"),
        (["--insecure-http", "--certfile", "a", "--keyfile", "b"], "conflicts"),
    ]
    for flags, message in cases:
        result = ws.fab("serve", "--public", *flags, host="target", env=ENV)
        assert result.returncode == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line]
        assert len(lines) == 1 and lines[0].startswith("labhop: target: ") and message in lines[0], lines
    no_password = ws.fab("serve", "--public", host="target")
    assert no_password.returncode == 2 and "a password is required" in no_password.stderr
    assert served_fingerprint(port) == before and pid_of(ws) == pid


def test_your_own_certificate(public, tmp_path: Path) -> None:
    ws, port, _, _ = public
    cert_pem, key_pem = generate(wanted_names(["jupyter.lab.example"]))
    (tmp_path / "site.crt").write_text(cert_pem)
    (tmp_path / "site.key").write_text(key_pem)
    flags = ["--certfile", str(tmp_path / "site.crt"), "--keyfile", str(tmp_path / "site.key")]
    out = ws.fab("serve", "--public", *flags, host="target", env=ENV).ok()
    assert "restart: stop JupyterLab (TLS certificate changed)" in out.stdout
    assert f"yours, --certfile {tmp_path / 'site.crt'}" in out.stdout
    assert printed_fingerprint(out.stdout) == served_fingerprint(port)
    assert served_fingerprint(port) == printed_fingerprint(out.stdout)
    assert key_pem not in out.output
    again = ws.fab("serve", "--public", *flags, host="target", env=ENV).ok()
    assert "already running with this config" in again.stdout and "changed " not in again.stdout
    assert login(f"https://127.0.0.1:{port}", PASSWORD) == (200, 200)


def test_insecure_http_is_plain_and_says_so_loudly(public) -> None:
    ws, port, _, _ = public
    out = ws.fab("serve", "--public", "--insecure-http", host="target", env=ENV).ok()
    assert "warning: --insecure-http: the public server speaks plain HTTP" in out.stderr
    assert f"open: http://127.0.0.1:{port}/lab" in out.stdout
    base = f"http://127.0.0.1:{port}"
    assert http_status(f"{base}/api/contents") == 403
    assert login(base, PASSWORD) == (200, 200)
    # and back to TLS: the certificate on the target no longer names this host's names -> a new one
    back = ws.fab("serve", "--public", host="target", env=ENV).ok()
    assert printed_fingerprint(back.stdout) == served_fingerprint(port)
