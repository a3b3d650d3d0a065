"""A throwaway MIT Kerberos realm for GSSAPI tests: a real ``krb5kdc`` on loopback.

Everything lives under one directory: ``krb5.conf`` (``KRB5_CONFIG``), ``kdc.conf``
(``KRB5_KDC_PROFILE``), the database (``kdb5_util create``), keytabs (``kadmin.local ktadd``)
and credential caches. The machine's ``/etc/krb5.conf`` and ``/etc/krb5kdc`` are not read or
written: every process is given the realm's variables (``env()``), so a test can run one at the
same time as another. No DNS: ``rdns`` and ``dns_canonicalize_hostname`` are off, so a client
asks for ``host/<the name it connects to>`` exactly.

``start_kdc(dir)`` creates the realm and starts ``krb5kdc -n`` (a child of the test; ``stop()``
ends it). ``service_keytab(principal)`` is a keytab for sshd (``KRB5_KTNAME``);
``kinit(user)`` gets a user's ticket into a cache of its own, without a password (from a keytab),
and returns the variables a client needs (``KRB5_CONFIG``, ``KRB5CCNAME``).
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .sshd import SshServer, end_process, free_port, start_sshd

__all__ = ["Kdc", "kdc_available", "start_kdc", "start_sshd_gssapi", "REALM"]

REALM = "LABHOP.TEST"
TOOLS = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit", "klist")


def _which(tool: str) -> str | None:
    return shutil.which(tool) or next((p for p in (f"/usr/sbin/{tool}", f"/usr/bin/{tool}") if Path(p).exists()),
                                      None)


def kdc_available() -> tuple[bool, str]:
    missing = [tool for tool in TOOLS if _which(tool) is None]
    if missing:
        return False, (f"MIT Kerberos tools missing ({', '.join(missing)}): "
                       "apt-get install krb5-kdc krb5-admin-server krb5-user")
    return True, ""


@dataclass
class Kdc:
    directory: Path
    port: int
    realm: str = REALM
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def krb5_conf(self) -> Path:
        return self.directory / "krb5.conf"

    def env(self) -> dict[str, str]:
        return {"KRB5_CONFIG": str(self.krb5_conf), "KRB5_KDC_PROFILE": str(self.directory / "kdc.conf")}

    def _run(self, *argv: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env(), **(extra or {})}
        tool = _which(argv[0]) or argv[0]
        return subprocess.run([tool, *argv[1:]], env=env, check=True, capture_output=True, text=True, timeout=60)

    def kadmin(self, query: str) -> str:
        return self._run("kadmin.local", "-r", self.realm, "-q", query).stdout

    def service_keytab(self, principal: str) -> Path:
        """A keytab holding a new random key for ``principal`` (e.g. ``host/localhost``)."""
        name = principal.replace("/", "_").replace("@", "_")
        keytab = self.directory / f"{name}.keytab"
        self.kadmin(f"addprinc -randkey {principal}")
        self.kadmin(f"ktadd -k {keytab} {principal}")
        keytab.chmod(0o600)
        return keytab

    def kinit(self, user: str) -> dict[str, str]:
        """A ticket for ``user@REALM`` in a cache of its own; the client's variables."""
        keytab = self.service_keytab(user)
        cache = self.directory / f"ccache-{user}"
        extra = {"KRB5CCNAME": f"FILE:{cache}"}
        self._run("kinit", "-k", "-t", str(keytab), f"{user}@{self.realm}", extra=extra)
        return {"KRB5_CONFIG": str(self.krb5_conf), "KRB5CCNAME": f"FILE:{cache}"}

    def log(self) -> str:
        try:
            return (self.directory / "kdc.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self._proc is not None:
            end_process(self._proc)


def _write_config(directory: Path, realm: str, port: int) -> None:
    (directory / "krb5.conf").write_text(
        "[libdefaults]\n"
        f"    default_realm = {realm}\n"
        "    dns_lookup_kdc = false\n    dns_lookup_realm = false\n"
        "    rdns = false\n    dns_canonicalize_hostname = false\n"
        "    udp_preference_limit = 1\n"  # TCP only: the port was picked free for TCP
        "[realms]\n"
        f"    {realm} = {{\n        kdc = 127.0.0.1:{port}\n    }}\n"
        "[domain_realm]\n"
        f"    localhost = {realm}\n")
    (directory / "kdc.conf").write_text(
        "[kdcdefaults]\n"
        f"    kdc_ports = {port}\n    kdc_tcp_ports = {port}\n"
        "[realms]\n"
        f"    {realm} = {{\n"
        f"        database_name = {directory / 'principal'}\n"
        f"        key_stash_file = {directory / 'stash'}\n"
        f"        acl_file = {directory / 'kadm5.acl'}\n"
        f"        kdc_ports = {port}\n        kdc_tcp_ports = {port}\n"
        "    }\n"
        "[logging]\n"
        f"    kdc = FILE:{directory / 'kdc.log'}\n"
        f"    admin_server = FILE:{directory / 'kadmin.log'}\n"
        f"    default = FILE:{directory / 'krb5lib.log'}\n")
    (directory / "kadm5.acl").write_text("")


def start_kdc(directory: Path, realm: str = REALM) -> Kdc:
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    last = ""
    for _attempt in range(3):  # the port was free a moment ago: retry on a bind race
        port = free_port()
        _write_config(directory, realm, port)
        kdc = Kdc(directory, port, realm)
        if not (directory / "principal").exists():
            kdc._run("kdb5_util", "create", "-s", "-r", realm, "-P", secrets.token_hex(16))
        log = open(directory / "krb5kdc.out", "ab")
        try:
            kdc._proc = subprocess.Popen([_which("krb5kdc") or "krb5kdc", "-n", "-r", realm],
                                         env={**os.environ, **kdc.env()}, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and kdc._proc.poll() is None:
            if "commencing operation" in kdc.log():
                return kdc
            time.sleep(0.05)
        last = kdc.log()[-2000:] + (directory / "krb5kdc.out").read_text(errors="replace")[-2000:]
        kdc.stop()
    raise RuntimeError(f"krb5kdc did not start in {directory}:\n{last}")


def start_sshd_gssapi(workdir: Path, name: str, kdc: Kdc, *, service_host: str = "localhost",
                      only_gssapi: bool = True) -> SshServer:
    """A harness sshd that accepts Kerberos tickets (``gssapi-with-mic``) with a keytab for
    ``host/<service_host>`` (``KRB5_KTNAME``); ``only_gssapi``: no other method is accepted, so a
    login proves the ticket was used. ``GSSAPIStrictAcceptorCheck no``: the keytab's name is the one
    clients connect to, not this machine's hostname."""
    keytab = kdc.service_keytab(f"host/{service_host}")
    options: dict[str, object] = {"GSSAPIAuthentication": "yes", "GSSAPIStrictAcceptorCheck": "no",
                                  "GSSAPICleanupCredentials": "yes"}
    if only_gssapi:
        options["AuthenticationMethods"] = "gssapi-with-mic"
    return start_sshd(workdir, name, sshd_options=options, ready_check=not only_gssapi,
                      env={**kdc.env(), "KRB5_KTNAME": f"FILE:{keytab}"})
