"""TLS for the public variant: the certificate JupyterLab serves, and the steps that put it in place.

By default labhop makes a self-signed certificate on the controller (``cryptography``),
naming the target the way labhop knows it (inventory name and hostname, the probed
hostname, the address SSH reached it at, ``localhost`` for tunnels). ``--certfile``
and ``--keyfile`` bring a real one instead. Both go into ``<prefix>/tls/`` with the
ordinary ``WriteFile`` step (content on stdin; the key 0600).

Idempotent: a certificate already on the target is kept while it still names every
wanted host, is not close to expiry and matches its key (the probe checks the pair
with the target's own ``ssl`` module), so re-runs change nothing and restart nothing.

Pure: ``cryptography`` only, no fabric/invoke/paramiko.
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

# cryptography's x509 is imported inside the functions that need it: every fab run loads this
# module (the fabfile imports it), most never touch a certificate (bench/noop_provision.py).

from .errors import UsageError
from .target.layout import Layout
from .target.probe import HostFacts, TargetTls
from .steps import Skip, Step, WriteFile

VALIDITY = datetime.timedelta(days=397)  # the longest a browser accepts for a public CA's cert
RENEW_BEFORE = datetime.timedelta(days=30)
# Always named: the browser reaches a tunnelled server as localhost / 127.0.0.1.
ALWAYS = ("localhost", "127.0.0.1", "::1")

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def tls_paths(prefix: str) -> tuple[str, str]:
    """(certificate, private key) on the target (tasks/target/layout.py; the probe reads the same two)."""
    layout = Layout(prefix)
    return layout.tls_cert, layout.tls_key


@dataclass(frozen=True)
class Names:
    """The subject alternative names a certificate must carry."""

    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()

    def covered_by(self, other: "Names") -> bool:
        return set(self.dns) <= set(other.dns) and set(self.ips) <= set(other.ips)

    def describe(self) -> str:
        return ", ".join([*self.dns, *self.ips])


def wanted_names(candidates: Iterable[Optional[str]]) -> Names:
    """Sort host names and addresses into SAN lists (stable order, no duplicates).

    Unspecified addresses (0.0.0.0, ::) are bind addresses, not names: left out.
    """
    dns: set[str] = set()
    ips: set[IPAddress] = set()
    for raw in [*candidates, *ALWAYS]:
        value = (raw or "").strip().strip("[]")
        if not value:
            continue
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            if _is_dns_name(value):
                dns.add(value.lower().rstrip("."))
            continue
        if not address.is_unspecified:
            ips.add(address)
    return Names(dns=tuple(sorted(dns)), ips=tuple(str(a) for a in sorted(ips, key=lambda a: (a.version, a))))


def _is_dns_name(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return all(label and len(label) <= 63 and all(ch.isalnum() or ch in "-_" for ch in label)
               for label in labels) and value.isascii()


@dataclass(frozen=True)
class CertInfo:
    fingerprint: str  # SHA-256 of the DER, colon-separated hex: what browsers show
    names: Names
    not_after: datetime.datetime
    self_signed: bool
    public_key: bytes  # SubjectPublicKeyInfo (DER): to match a key against it


def fingerprint(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def inspect(pem: str) -> CertInfo:
    """What a PEM certificate says about itself (ValueError when it is not one)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(pem.encode("ascii", "replace"))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = Names(dns=tuple(sorted(n.lower() for n in san.get_values_for_type(x509.DNSName))),
                      ips=tuple(str(a) for a in san.get_values_for_type(x509.IPAddress)))
    except x509.ExtensionNotFound:
        names = Names()
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    not_after = getattr(cert, "not_valid_after_utc", None)  # cryptography >= 42
    if not_after is None:
        not_after = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return CertInfo(fingerprint=fingerprint(cert.public_bytes(serialization.Encoding.DER)), names=names,
                    not_after=not_after, self_signed=cert.issuer == cert.subject, public_key=spki)


def generate(names: Names, *, now: Optional[datetime.datetime] = None) -> tuple[str, str]:
    """A fresh self-signed certificate for ``names`` and its key, both PEM.

    ECDSA P-256: every browser takes it and it is made in a millisecond. A leaf
    (CA:FALSE, serverAuth) so that browsers accept it as a per-site exception.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = now or datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = (names.dns or names.ips or ("labhop",))[0]
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labhop"),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    alt = [x509.DNSName(n) for n in names.dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in names.ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate a little clock skew
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")
    return cert_pem, key_pem


def load_pair(certfile: str, keyfile: str, *, now: Optional[datetime.datetime] = None) -> tuple[str, str]:
    """The user's own certificate and key (controller files), checked before anything connects."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    cert_pem = _read(certfile, "--certfile")
    key_pem = _read(keyfile, "--keyfile")
    try:
        info = inspect(cert_pem)
    except ValueError:
        raise UsageError(f"--certfile {certfile}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode("ascii", "replace"), password=None)
    except TypeError:
        raise UsageError(f"--keyfile {keyfile}: the key is encrypted; "
                         "JupyterLab needs it without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError(f"--keyfile {keyfile}: not a PEM private key") from None
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    if spki != info.public_key:
        raise UsageError(f"--keyfile {keyfile} is not the key of --certfile {certfile}")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if info.not_after <= now:
        raise UsageError(f"--certfile {certfile} expired on {info.not_after:%Y-%m-%d}")
    return cert_pem, key_pem


def _read(path: str, flag: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror or exc}") from None


def check_flags(*, public: bool, certfile: Optional[str], keyfile: Optional[str], insecure_http: bool) -> None:
    """The TLS flags only make sense together in some ways: say which way is wrong."""
    given = [f for f, v in (("--certfile", certfile), ("--keyfile", keyfile), ("--insecure-http", insecure_http)) if v]
    if given and not public:
        raise UsageError(f"{' and '.join(given)}: only with --public (the localhost variant is reached "
                         f"through SSH and needs no TLS)")
    if insecure_http and (certfile or keyfile):
        raise UsageError("--insecure-http conflicts with --certfile/--keyfile: pick one")
    if bool(certfile) != bool(keyfile):
        raise UsageError("--certfile and --keyfile go together: give both")


# -- what is on the target, and what to do about it ---------------------------------------------

@dataclass
class TlsPlan:
    steps: list[Step] = field(default_factory=list)
    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    info: Optional[CertInfo] = None
    origin: str = ""  # human words: "new: ...", "kept from an earlier run", "yours, --certfile ..."
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(not isinstance(s, Skip) for s in self.steps)

    def report_lines(self) -> list[str]:
        if self.info is None:
            return []
        kind = "self-signed certificate" if self.info.self_signed else "certificate"
        return [f"TLS: {kind} ({self.origin}) for {self.info.names.describe()}, valid until "
                f"{self.info.not_after:%Y-%m-%d}",
                f"TLS: SHA-256 fingerprint {self.info.fingerprint} (compare with what the browser shows)"]


def plan_tls(prefix: str, on_target: TargetTls, names: Names, *, provided: Optional[tuple[str, str]] = None,
             provided_from: str = "", now: Optional[datetime.datetime] = None) -> TlsPlan:
    """Steps that leave a usable certificate + key in ``<prefix>/tls`` and the paths to configure."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    cert_path, key_path = tls_paths(prefix)
    plan = TlsPlan(certfile=cert_path, keyfile=key_path)
    if provided is not None:
        cert_pem, key_pem = provided
        same = (on_target.cert == cert_pem
                and on_target.key_sha256 == hashlib.sha256(key_pem.encode("ascii")).hexdigest())
        plan.info, plan.origin = inspect(cert_pem), f"yours, {provided_from}"
        plan.steps = _write_or_skip(cert_path, key_path, cert_pem, key_pem,
                                    None if not same else "already the one from " + provided_from)
        return plan
    reason = _reusable(on_target, names, now)
    if reason is None:
        plan.info, plan.origin = inspect(on_target.cert or ""), "kept from an earlier run"
        plan.steps = [Skip(f"TLS certificate {cert_path}", "names this host, valid, matches its key"),
                      Skip(f"TLS key {key_path}", "belongs to that certificate")]
        return plan
    cert_pem, key_pem = generate(_with_earlier_names(names, on_target), now=now)
    plan.info, plan.origin = inspect(cert_pem), f"new: {reason}"
    plan.steps = _write_or_skip(cert_path, key_path, cert_pem, key_pem, None)
    return plan


def _reusable(on_target: TargetTls, names: Names, now: datetime.datetime) -> Optional[str]:
    """None when the certificate on the target can stay, else why it cannot."""
    if not on_target.cert:
        return "none on the target yet"
    try:
        info = inspect(on_target.cert)
    except ValueError:
        return "the one on the target is unreadable"
    if on_target.pair_ok is not True:
        return "the one on the target does not match its key"
    if not names.covered_by(info.names):
        missing = Names(dns=tuple(n for n in names.dns if n not in info.names.dns),
                        ips=tuple(a for a in names.ips if a not in info.names.ips))
        return f"the one on the target does not name {missing.describe()}"
    if info.not_after - RENEW_BEFORE <= now:
        return f"the one on the target expires on {info.not_after:%Y-%m-%d}"
    return None


def _with_earlier_names(names: Names, on_target: TargetTls) -> Names:
    """Keep naming what an earlier self-signed certificate named, so that reaching the host
    by two names in turn converges on one certificate instead of a new one every run."""
    try:
        earlier = inspect(on_target.cert) if on_target.cert else None
    except ValueError:
        earlier = None
    if earlier is None or not earlier.self_signed:
        return names
    return wanted_names([*names.dns, *names.ips, *earlier.names.dns, *earlier.names.ips])


def _write_or_skip(cert_path: str, key_path: str, cert_pem: str, key_pem: str,
                   skip_reason: Optional[str]) -> list[Step]:
    if skip_reason is not None:
        return [Skip(f"TLS certificate {cert_path}", skip_reason), Skip(f"TLS key {key_path}", skip_reason)]
    # The key first: a run killed between the two leaves a pair that fails the probe's
    # check, so the next run replaces both.
    return [WriteFile(f"write TLS key {key_path} (0600)", key_path, key_pem, 0o600),
            WriteFile(f"write TLS certificate {cert_path}", cert_path, cert_pem, 0o644)]


# -- from the serve flags to a plan ---------------------------------------------------------------

INSECURE_WARNING = ("--insecure-http: the public server speaks plain HTTP. The password, your code and its "
                    "output cross the network unencrypted; anyone on the path can read them and take over "
                    "the session. Use it only on a network you trust.")


@dataclass(frozen=True)
class TlsRequest:
    mode: str  # "off" (localhost variant), "insecure", "self-signed", "provided"
    pair: Optional[tuple[str, str]] = None
    source: str = ""


def tls_request(*, public: bool, certfile: Optional[str], keyfile: Optional[str],
                insecure_http: bool) -> TlsRequest:
    """Read and check the TLS flags on the controller, before anything connects."""
    check_flags(public=public, certfile=certfile, keyfile=keyfile, insecure_http=insecure_http)
    if not public:
        return TlsRequest("off")
    if insecure_http:
        return TlsRequest("insecure")
    if certfile and keyfile:
        return TlsRequest("provided", load_pair(certfile, keyfile), f"--certfile {certfile}")
    return TlsRequest("self-signed")


def plan_serve_tls(request: TlsRequest, facts: HostFacts, names: Iterable[Optional[str]]) -> TlsPlan:
    """``names``: how labhop knows the host (inventory name and hostname, the address it connected to,
    a specific --ip); the probed hostname and the address SSH reached are added here."""
    if request.mode == "off":
        return TlsPlan()
    if request.mode == "insecure":
        return TlsPlan(warnings=[INSECURE_WARNING])
    wanted = wanted_names([*names, facts.hostname, facts.ssh_address])
    return plan_tls(facts.prefix, facts.tls, wanted, provided=request.pair, provided_from=request.source)
