"""TLS material for --public: names, generation, reuse decisions, the user's own pair."""
from __future__ import annotations

import datetime
import hashlib
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from labhop.certs import (Names, TargetTls, check_flags, generate, inspect, load_pair, plan_tls, tls_paths,
                         wanted_names)
from labhop.errors import UsageError
from labhop.steps import Skip, WriteFile

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)


def key_digest(key_pem: str) -> str:
    return hashlib.sha256(key_pem.encode()).hexdigest()


def test_names_are_sorted_into_dns_and_ip_without_bind_addresses() -> None:
    names = wanted_names(["GPU-Box.example.edu.", "10.0.0.7", None, "", "0.0.0.0", "[fe80::1]", "gpu-box.example.edu",
                          "not a name!"])
    assert names.dns == ("gpu-box.example.edu", "localhost")
    assert names.ips == ("10.0.0.7", "127.0.0.1", "::1", "fe80::1")


def test_generated_certificate_names_the_host_and_its_fingerprint_is_the_der_digest() -> None:
    names = wanted_names(["nb1", "10.1.2.3"])
    cert_pem, key_pem = generate(names, now=NOW)
    info = inspect(cert_pem)
    assert info.names == names
    assert info.self_signed
    der = ssl.PEM_cert_to_DER_cert(cert_pem)
    assert info.fingerprint.replace(":", "").lower() == hashlib.sha256(der).hexdigest()
    assert info.not_after > NOW + datetime.timedelta(days=300)
    assert "PRIVATE KEY" in key_pem and "PRIVATE KEY" not in cert_pem


def test_python_ssl_verifies_a_generated_certificate_by_name(tmp_path: Path) -> None:
    """A real TLS handshake on loopback: a client trusting only this certificate accepts it for
    each of its names (so a browser exception / pinning works) and rejects another name."""
    cert_pem, key_pem = generate(wanted_names(["nb1.example", "10.1.2.3"]))
    (tmp_path / "c.pem").write_text(cert_pem)
    (tmp_path / "k.pem").write_text(key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")

    def handshake(server_hostname: str) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client_ctx = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                    tls.sendall(b"x")
        finally:
            thread.join(5)
            listener.close()

    for name in ("nb1.example", "10.1.2.3", "localhost", "127.0.0.1"):
        handshake(name)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake("elsewhere.example")


def test_fresh_target_gets_a_key_0600_then_a_certificate() -> None:
    plan = plan_tls("/p", TargetTls(), wanted_names(["nb1"]), now=NOW)
    assert [type(s) for s in plan.steps] == [WriteFile, WriteFile]
    key, cert = plan.steps
    assert (key.path, key.mode) == ("/p/tls/key.pem", 0o600)
    assert (cert.path, cert.mode) == ("/p/tls/cert.pem", 0o644)
    assert (plan.certfile, plan.keyfile) == tls_paths("/p")
    assert inspect(cert.content).fingerprint == plan.info.fingerprint
    assert plan.changed and "none on the target" in plan.origin
    assert any(plan.info.fingerprint in line for line in plan.report_lines())


def test_the_certificate_on_the_target_is_kept_when_it_still_fits() -> None:
    names = wanted_names(["nb1", "10.0.0.2"])
    cert_pem, key_pem = generate(names, now=NOW)
    on_target = TargetTls(cert=cert_pem, key_sha256=key_digest(key_pem), pair_ok=True)
    plan = plan_tls("/p", on_target, wanted_names(["nb1"]), now=NOW + datetime.timedelta(days=100))
    assert all(isinstance(s, Skip) for s in plan.steps) and not plan.changed
    assert plan.info.fingerprint == inspect(cert_pem).fingerprint


@pytest.mark.parametrize("change, why", [
    (dict(names=["nb1", "nb1.lab.example"]), "does not name nb1.lab.example"),
    (dict(pair_ok=False), "does not match its key"),
    (dict(pair_ok=None), "does not match its key"),
    (dict(days=380), "expires on"),
    (dict(cert="garbage"), "unreadable"),
])
def test_the_certificate_on_the_target_is_replaced_when_it_does_not_fit(change: dict, why: str) -> None:
    cert_pem, key_pem = generate(wanted_names(["nb1"]), now=NOW)
    on_target = TargetTls(cert=change.get("cert", cert_pem), key_sha256=key_digest(key_pem),
                          pair_ok=change.get("pair_ok", True))
    now = NOW + datetime.timedelta(days=change.get("days", 0))
    plan = plan_tls("/p", on_target, wanted_names(change.get("names", ["nb1"])), now=now)
    assert [type(s) for s in plan.steps] == [WriteFile, WriteFile]
    assert why in plan.origin
    assert plan.info.fingerprint != inspect(cert_pem).fingerprint


def test_a_new_name_keeps_the_earlier_names_so_alternating_names_converge() -> None:
    cert_pem, key_pem = generate(wanted_names(["alias-a"]), now=NOW)
    first = plan_tls("/p", TargetTls(cert=cert_pem, key_sha256=key_digest(key_pem), pair_ok=True),
                     wanted_names(["alias-b"]), now=NOW)
    new_cert = first.steps[1].content
    assert {"alias-a", "alias-b"} <= set(inspect(new_cert).names.dns)
    again = plan_tls("/p", TargetTls(cert=new_cert, key_sha256="x", pair_ok=True), wanted_names(["alias-a"]), now=NOW)
    assert not again.changed


def write_pair(tmp_path: Path, names: Names) -> tuple[Path, Path]:
    cert_pem, key_pem = generate(names)
    cert, key = tmp_path / "site.crt", tmp_path / "site.key"
    cert.write_text(cert_pem)
    key.write_text(key_pem)
    return cert, key


def test_your_own_pair_is_pushed_once_then_kept(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, wanted_names(["lab.example.org"]))
    pair = load_pair(str(cert), str(key))
    plan = plan_tls("/p", TargetTls(), wanted_names(["nb1"]), provided=pair, provided_from=f"--certfile {cert}")
    assert [s.content for s in plan.steps] == [pair[1], pair[0]]
    assert "yours" in plan.origin
    on_target = TargetTls(cert=pair[0], key_sha256=key_digest(pair[1]), pair_ok=True)
    again = plan_tls("/p", on_target, wanted_names(["nb1"]), provided=pair, provided_from="--certfile x")
    assert not again.changed


def test_your_own_pair_errors_name_the_file(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, wanted_names(["a"]))
    with pytest.raises(UsageError, match=r"^--certfile .*/missing.crt: No such file or directory$"):
        load_pair(str(tmp_path / "missing.crt"), str(key))
    with pytest.raises(UsageError, match=r"^--keyfile .*/nokey: No such file or directory$"):
        load_pair(str(cert), str(tmp_path / "nokey"))
    with pytest.raises(UsageError, match="not a PEM certificate"):
        load_pair(str(key), str(key))
    with pytest.raises(UsageError, match="not a PEM private key"):
        load_pair(str(cert), str(cert))
    other_cert, other_key = write_pair(tmp_path / "", wanted_names(["b"]))  # overwrites: fresh pair
    (tmp_path / "old.key").write_text(generate(wanted_names(["c"]))[1])
    with pytest.raises(UsageError, match="is not the key of --certfile"):
        load_pair(str(other_cert), str(tmp_path / "old.key"))
    encrypted = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass"))
    (tmp_path / "enc.key").write_bytes(encrypted)
    with pytest.raises(UsageError, match="encrypted"):
        load_pair(str(other_cert), str(tmp_path / "enc.key"))
    with pytest.raises(UsageError, match="expired"):
        load_pair(str(other_cert), str(other_key), now=NOW + datetime.timedelta(days=3650))


@pytest.mark.parametrize("flags, message", [
    (dict(public=False, certfile="c", keyfile="k", insecure_http=False), "only with --public"),
    (dict(public=False, certfile=None, keyfile=None, insecure_http=True), "^--insecure-http: only with"),
    (dict(public=True, certfile="c", keyfile="k", insecure_http=True), "conflicts"),
    (dict(public=True, certfile="c", keyfile=None, insecure_http=False), "go together"),
    (dict(public=True, certfile=None, keyfile="k", insecure_http=False), "go together"),
])
def test_flag_combinations_that_make_no_sense(flags: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_flags(**flags)


def test_flag_combinations_that_are_fine() -> None:
    check_flags(public=True, certfile="c", keyfile="k", insecure_http=False)
    check_flags(public=True, certfile=None, keyfile=None, insecure_http=True)
    check_flags(public=False, certfile=None, keyfile=None, insecure_http=False)
