"""OpenSSH certificates for test sshds and clients: a throwaway CA (``ssh-keygen -s``).

``CertAuthority.create(dir)`` makes a CA key pair. ``sign_host(key, principals)`` writes
``<key>-cert.pub`` (a host certificate, for sshd's ``HostCertificate``); ``sign_user(key,
principals)`` a user certificate (for a client's ``CertificateFile``, checked by sshd's
``TrustedUserCAKeys``). ``known_hosts_line()`` is the ``@cert-authority`` line a client trusts
the CA's host certificates with. Nothing here touches ``~/.ssh`` or ``/etc/ssh``.
"""
from __future__ import annotations

import base64
import os
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["CertAuthority", "new_key", "public_line", "security_key_stub"]


def _keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True, text=True, timeout=30)


def new_key(path: Path, comment: str = "labhop-test") -> Path:
    """A passphrase-less ed25519 key pair at ``path`` (and ``path.pub``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _keygen("-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
        path.chmod(0o600)
    return path


def public_line(key: Path) -> str:
    """``type base64`` of a key's public half (no comment)."""
    kind, blob = Path(str(key) + ".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def security_key_stub(path: Path, comment: str = "labhop-test-sk") -> Path:
    """An ``sk-ssh-ed25519@openssh.com`` key pair as ``ssh-keygen -t ed25519-sk`` writes it (the
    private file holds a key handle, the secret stays on the device), made without a device. ssh
    loads it and offers its public half; signing with it would need the device, so it is only good
    for checking that such keys and files are passed along, never for a login."""
    key_type = b"sk-ssh-ed25519@openssh.com"
    public = _field(key_type) + _field(os.urandom(32)) + _field(b"ssh:")
    check = os.urandom(4)
    private = (check + check + public + bytes([0x01]) + _field(os.urandom(64)) + _field(b"")
               + _field(comment.encode()))
    private += bytes(range(1, 8 - len(private) % 8 + 1)) if len(private) % 8 else b""
    body = (b"openssh-key-v1\0" + _field(b"none") + _field(b"none") + _field(b"") + struct.pack(">I", 1)
            + _field(public) + _field(private))
    text = base64.encodebytes(body).decode().replace("\n", "")
    lines = [text[i:i + 70] for i in range(0, len(text), 70)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in ["-----BEGIN OPENSSH PRIVATE KEY-----", *lines,
                                                      "-----END OPENSSH PRIVATE KEY-----"]))
    path.chmod(0o600)
    Path(str(path) + ".pub").write_text(f"{key_type.decode()} {base64.b64encode(public).decode()} {comment}\n")
    return path


@dataclass(frozen=True)
class CertAuthority:
    key: Path  # the CA's private key; key.pub its public half

    @classmethod
    def create(cls, directory: Path, name: str = "ca") -> "CertAuthority":
        return cls(new_key(Path(directory) / name, f"labhop-test-{name}"))

    @property
    def public(self) -> Path:
        return Path(str(self.key) + ".pub")

    def known_hosts_line(self, pattern: str = "*") -> str:
        return f"@cert-authority {pattern} {public_line(self.key)}"

    def _sign(self, key: Path, principals: Sequence[str], *, host: bool, identity: str, out: Path | None) -> Path:
        cert = Path(str(key) + "-cert.pub")
        args = ["-s", str(self.key), "-I", identity, "-n", ",".join(principals), "-V", "-5m:+1d"]
        _keygen(*args, *(["-h"] if host else []), str(key) + ".pub")
        if out is not None and out != cert:
            out.parent.mkdir(parents=True, exist_ok=True)
            cert.replace(out)
            return out
        return cert

    def sign_host(self, key: Path, principals: Sequence[str], *, out: Path | None = None) -> Path:
        """A host certificate for ``key`` (``-h``), valid for the names ``principals``."""
        return self._sign(key, principals, host=True, identity="labhop-test-host", out=out)

    def sign_user(self, key: Path, principals: Sequence[str], *, out: Path | None = None) -> Path:
        """A user certificate for ``key``, valid for the accounts ``principals``; ``out`` moves it
        away from ``<key>-cert.pub`` (where ssh would find it without ``CertificateFile``)."""
        return self._sign(key, principals, host=False, identity="labhop-test-user", out=out)
