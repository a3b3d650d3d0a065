"""ssh_config as OpenSSH reads it, through labhop's masters: Match blocks, certificates and
``@cert-authority``, keys only in an agent, Kerberos (GSSAPI), known_hosts markers.

Each test is a person's machine: an ssh_config of their own (``fab -S``), a HOME with no keys, no
terminal (fab in a session of its own), labhop's state in a directory of its own; the servers are
real sshds (tests/harness), a real ssh-agent (tests/harness/agent.py), a CA made with
``ssh-keygen -s`` (tests/harness/certs.py), a real MIT KDC (tests/harness/kdc.py). What proves the
feature was used is the server's own log (``Accepted <method> for``) and, for the negative cases,
that the same run without it is refused in one line.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from tests.harness.agent import start_agent
from tests.harness.certs import CertAuthority, new_key, public_line, security_key_stub
from tests.harness.kdc import Kdc, kdc_available, start_kdc, start_sshd_gssapi
from tests.harness.sshd import SshServer, known_hosts_name, start_sshd
from tests.harness.topology import Topology
from tests.harness.totp import accepted
from tests.support import FabResult, Workspace, need
from tests.support import one_line_refusal as refused

pytestmark = pytest.mark.integration

PREFIX = "~/.labhop-sshconf"


class User:
    """One person's laptop: their ssh_config and known_hosts, a HOME without keys, labhop's state."""

    def __init__(self, root: Path, config: str, env: Optional[dict[str, str]] = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.config = root / "ssh_config"
        self.config.write_text(config)
        home = root / "home"
        home.mkdir(exist_ok=True)
        self.ws = Workspace(root=root, inventory=root / "inventory.toml", ssh_config=self.config, home=home)
        self.ws.write_inventory(f'[defaults]\nprefix = "{PREFIX}"\n')
        # No agent unless the test gives one: a key found there would hide what is being tested.
        self.env = {"XDG_STATE_HOME": str(root / "state"), "SSH_AUTH_SOCK": "", **(env or {})}
        self.hosts: set[str] = set()

    def fab(self, *args: str, host: str, env: Optional[dict[str, str]] = None, timeout: float = 300) -> FabResult:
        self.hosts.add(host)
        return self.ws.fab(*args, host=host, env={**self.env, **(env or {})}, timeout=timeout, detach=True)

    def ssh(self, host: str, command: str, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
        """The same config with the plain OpenSSH client, as the person would check it."""
        import os

        return subprocess.run(["ssh", "-F", str(self.config), host, command], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL,
                              env={**os.environ, "HOME": str(self.root / "home"), **self.env, **(env or {})})

    def close(self) -> None:
        for host in sorted(self.hosts):
            self.fab("logout", host=host, timeout=60)


@pytest.fixture
def make_user(tmp_path: Path) -> Iterator[Callable[..., User]]:
    made: list[User] = []

    def make(config: str, name: str = "user", env: Optional[dict[str, str]] = None) -> User:
        user = User(tmp_path / name, config, env)
        made.append(user)
        return user

    yield make
    for user in made:
        user.close()




def logged_in(result: FabResult, *hops: str) -> None:
    result.ok()
    assert "not running" in result.stdout or "running: pid" in result.stdout, result.output
    assert f"login: live to {', '.join(hops)}" in result.stdout, result.output


# -- Match -------------------------------------------------------------------------------------------

def test_match_blocks_set_hostname_port_key_and_jump_as_ssh_reads_them(topology: Topology, make_user) -> None:
    """The target is reachable only through the jump host (network namespaces); its address, port,
    jump and key come from Match blocks alone (originalhost, host + exec with %n, host + user)."""
    jump, target = topology.jump, topology.target
    known = topology.known_hosts
    user = make_user(f"""
Match originalhost lab-bastion
    HostName {jump.address}
    Port {jump.port}
Match host lab-target exec "test %n = lab-target"
    HostName {target.address}
    Port {target.port}
    ProxyJump lab-bastion
Match host {jump.address},{target.address} user {jump.user}
    IdentityFile {jump.identity_file}
    IdentitiesOnly yes
Match all
    UserKnownHostsFile {known}
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 5
""")
    assert user.ssh("lab-target", "true").returncode == 0  # ssh itself gets there with this config
    before = accepted(target, "publickey")
    logged_in(user.fab("status", host="lab-target"), "lab-bastion", "lab-target")
    dry = user.fab("provision", "--dry-run", host="lab-target").ok()
    assert "would" in dry.stdout, dry.output
    assert accepted(target, "publickey") == before + 1  # one login, shared by both runs
    if topology.isolated:  # and it was the jump host that got there: the laptop has no route
        direct = subprocess.run(["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "-p",
                                 str(target.port), target.address, "true"], capture_output=True, text=True,
                                timeout=30)
        assert direct.returncode == 255


def _lab_config(topology: Topology, keys: str, known_hosts: Path) -> str:
    """``lab-bastion`` (the jump host) and ``lab-target`` behind it; ``keys``: the lines saying how to log in."""
    jump, target = topology.jump, topology.target
    return f"""
Host lab-bastion
    HostName {jump.address}
    Port {jump.port}
Host lab-target
    HostName {target.address}
    Port {target.port}
    ProxyJump lab-bastion
Host lab-*
    User {target.user}
{keys}    UserKnownHostsFile {known_hosts}
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 5
"""


def test_hosts_from_an_included_file_are_reached_as_ssh_reaches_them(topology: Topology, make_user,
                                                                     tmp_path: Path) -> None:
    """`Include` (paramiko's parser has none): the hosts, their jump, key, known_hosts file and strict
    checking all live in the included file; the user's main file holds nothing else."""
    jump, target = topology.jump, topology.target
    known = tmp_path / "included_known_hosts"
    known.write_text(topology.known_hosts.read_text())
    conf_d = tmp_path / "config.d"
    conf_d.mkdir()
    (conf_d / "lab.conf").write_text(_lab_config(
        topology, f"    IdentityFile {jump.identity_file}\n    IdentitiesOnly yes\n", known))
    user = make_user(f"Include {conf_d}/*.conf\n")
    logged_in(user.fab("status", host="lab-target"), "lab-bastion", "lab-target")
    user.fab("logout", host="lab-target").ok()
    # The included known_hosts is the one checked: with another key there, the target is refused.
    name = known_hosts_name(target.address, target.port)
    lines = [line for line in known.read_text().splitlines() if line.split()[0] != name]
    impostor = new_key(tmp_path / "impostor")
    known.write_text("\n".join([*lines, f"{name} {public_line(impostor)}"]) + "\n")
    refused(user.fab("status", host="lab-target"), "lab-target", "CHANGED", str(known))


@pytest.mark.parametrize("read_by", ["paramiko", "ssh -G"])
def test_a_proxycommand_of_the_users_reaches_the_target(topology: Topology, make_user, tmp_path: Path,
                                                        read_by: str) -> None:
    """`ProxyCommand ssh ... -W %h:%p` (or nc, a SOCKS helper): labhop's master runs it with the tokens
    filled in, whether paramiko read the file or ssh -G did (an Include in front makes it the latter)."""
    jump, target = topology.jump, topology.target
    proxy = (f"ssh -F none -i {jump.identity_file} -o IdentitiesOnly=yes -o BatchMode=yes "
             f"-o UserKnownHostsFile={topology.known_hosts} -o StrictHostKeyChecking=yes "
             f"-p {jump.port} -l {jump.user} -W %h:%p {jump.address}")
    body = f"""
Host lab-target
    HostName {target.address}
    Port {target.port}
    User {target.user}
    ProxyCommand {proxy}
    IdentityFile {target.identity_file}
    IdentitiesOnly yes
    UserKnownHostsFile {topology.known_hosts}
    StrictHostKeyChecking yes
    BatchMode yes
"""
    if read_by == "ssh -G":
        (tmp_path / "lab.conf").write_text(body)
        body = f"Include {tmp_path}/lab.conf\n"
    user = make_user(body)
    logged_in(user.fab("status", host="lab-target"), "lab-target")


# -- certificates -----------------------------------------------------------------------------------

class CertSite:
    """An sshd with a host certificate (``HostCertificate``) that trusts a user CA (``TrustedUserCAKeys``);
    the person's key is signed by that CA and is in no authorized_keys file."""

    def __init__(self, root: Path) -> None:
        self.host_ca = CertAuthority.create(root / "ca", "host-ca")
        self.user_ca = CertAuthority.create(root / "ca", "user-ca")
        self.other_ca = CertAuthority.create(root / "ca", "other-ca")
        host_key = new_key(root / "sshd-certhost" / "ssh_host_ed25519_key", "certhost")
        self.host_key = host_key
        host_cert = self.host_ca.sign_host(host_key, ["127.0.0.1", "localhost", "certhost"])
        self.server = start_sshd(root, "certhost", sshd_options={"HostCertificate": host_cert,
                                                                 "TrustedUserCAKeys": self.user_ca.public})
        self.user_key = new_key(root / "person" / "id_ed25519", "person")
        # Not at id_ed25519-cert.pub (where ssh would find it anyway): only CertificateFile names it.
        self.user_cert = self.user_ca.sign_user(self.user_key, [self.server.user],
                                                out=root / "person" / "signed-by-user-ca.pub")
        assert public_line(self.user_key) not in Path(self.server.workdir or root, "authorized_keys").read_text()

    def config(self, known_hosts: Path, strict: str = "accept-new") -> str:
        # `Match host certhost` comes before HostName: ssh matches it against the alias, so the certificate
        # is used only if labhop lets ssh read the config as it is (no HostName of its own on the command line).
        return f"""
Match host certhost
    CertificateFile {self.user_cert}
    IdentityFile {self.user_key}
    IdentitiesOnly yes
Host certhost
    HostName {self.server.address}
    Port {self.server.port}
    User {self.server.user}
    UserKnownHostsFile {known_hosts}
    StrictHostKeyChecking {strict}
    BatchMode yes
    ConnectTimeout 5
"""


@pytest.fixture(scope="module")
def cert_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertSite]:
    site = CertSite(tmp_path_factory.mktemp("certs"))
    try:
        yield site
    finally:
        site.server.stop()


@pytest.mark.parametrize("strict", ["accept-new", "ask", "yes"])
def test_host_certificate_trusted_by_a_cert_authority_line_and_a_user_certificate(cert_site: CertSite, make_user,
                                                                                  tmp_path: Path, strict: str) -> None:
    """ask: there is no terminal, and nothing needs asking."""
    site = cert_site
    known = tmp_path / "known_hosts"
    known.write_text(site.host_ca.known_hosts_line() + "\n")
    user = make_user(site.config(known, strict=strict))
    before = accepted(site.server, "publickey")
    first = user.fab("status", host="certhost")
    logged_in(first, "certhost")
    assert "permanently added" not in first.output.lower()  # nothing asked, nothing recorded
    assert known.read_text() == site.host_ca.known_hosts_line() + "\n"  # no plain key written
    logged_in(user.fab("status", host="certhost"), "certhost")
    log = site.server.log_path.read_text()
    assert accepted(site.server, "publickey") == before + 1
    assert "ED25519-CERT" in log.splitlines()[-1] or any(
        "Accepted publickey" in line and "ED25519-CERT" in line and "labhop-test-user" in line
        for line in log.splitlines()), log[-2000:]


def test_a_host_certificate_from_another_ca_is_refused(cert_site: CertSite, make_user, tmp_path: Path) -> None:
    site = cert_site
    known = tmp_path / "known_hosts"
    known.write_text(site.other_ca.known_hosts_line() + "\n")
    user = make_user(site.config(known, strict="yes"))
    started = time.monotonic()
    line = refused(user.fab("status", host="certhost"), "certhost", "unknown",
                   f"{known}:1 trusts a certificate authority for it", "no certificate that CA signed")
    assert time.monotonic() - started < 30, line
    assert known.read_text() == site.other_ca.known_hosts_line() + "\n"


def test_a_revoked_host_key_is_refused_even_with_a_valid_certificate(cert_site: CertSite, make_user,
                                                                     tmp_path: Path) -> None:
    site = cert_site
    known = tmp_path / "known_hosts"
    known.write_text(site.host_ca.known_hosts_line() + "\n" + f"@revoked * {public_line(site.host_key)}\n")
    user = make_user(site.config(known))
    refused(user.fab("status", host="certhost"), "certhost", "revoked")


def test_a_changed_plain_key_is_refused_next_to_a_cert_authority(cert_site: CertSite, sshd_server: SshServer,
                                                                 make_user, tmp_path: Path) -> None:
    """A host without a certificate whose known key changed: the CA line does not make it trusted."""
    site, plain = cert_site, sshd_server
    impostor = new_key(tmp_path / "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(site.host_ca.known_hosts_line() + "\n"
                     + f"{known_hosts_name(plain.address, plain.port)} {public_line(impostor)}\n")
    user = make_user(f"""
Host plain
    HostName {plain.address}
    Port {plain.port}
    User {plain.user}
    IdentityFile {plain.identity_file}
    IdentitiesOnly yes
    UserKnownHostsFile {known}
    StrictHostKeyChecking accept-new
    BatchMode yes
""")
    line = refused(user.fab("status", host="plain"), "plain", "CHANGED", "refusing")
    assert "it offers ED25519 key SHA256:" in line and f"{known}:2 has another" in line, line


# -- options of the user's that would get in labhop's way -------------------------------------------------

def test_the_users_session_options_and_log_level_do_not_get_in_the_way(sshd_server: SshServer, make_user,
                                                                       tmp_path: Path) -> None:
    """RemoteCommand/RequestTTY (an HPC `srun --pty` habit), forwards, LocalCommand and a LogLevel of
    their own in the host's block: labhop's master runs no command and holds no forward of the config's,
    and ssh's messages still say why a login failed."""
    server = sshd_server
    marker = tmp_path / "local-command-ran"

    def config(level: str, key: Path) -> str:
        return f"""
Host busy
    HostName {server.address}
    Port {server.port}
    User {server.user}
    IdentityFile {key}
    IdentitiesOnly yes
    RemoteCommand exec sh -c 'echo should-not-run > ~/remote-command-ran'
    RequestTTY force
    LocalForward 127.0.0.1:{server.port + 1 if server.port < 65535 else 1} 127.0.0.1:{server.port}
    PermitLocalCommand yes
    LocalCommand echo login >> {marker}
    LogLevel {level}
    UserKnownHostsFile {server.known_hosts}
    StrictHostKeyChecking yes
    BatchMode yes
"""

    user = make_user(config("QUIET", server.identity_file))
    logged_in(user.fab("status", host="busy"), "busy")
    logged_in(user.fab("status", host="busy"), "busy")
    assert not (server.home / "remote-command-ran").exists()
    assert marker.read_text().splitlines() == ["login"]
    for level in ("QUIET", "DEBUG3"):
        stranger = make_user(config(level, new_key(tmp_path / f"stranger-key-{level}")), name=f"stranger-{level}")
        refused(stranger.fab("status", host="busy"), "busy", "no key offered was accepted",
                "Permission denied (publickey)")


# -- keys in an agent -------------------------------------------------------------------------------

def _agent_config(topology: Topology, identity_agent: Optional[Path]) -> str:
    agent = f"    IdentityAgent {identity_agent}\n" if identity_agent else ""
    return _lab_config(topology, agent, topology.known_hosts)


@pytest.mark.parametrize("how", ["IdentityAgent", "SSH_AUTH_SOCK"])
def test_a_key_only_in_an_agent_logs_in_through_the_jump_host(topology: Topology, make_user, tmp_path: Path,
                                                              how: str) -> None:
    """No IdentityFile anywhere and no key under HOME: the agent's key opens both hops."""
    agent = start_agent(tmp_path / "agent")
    try:
        agent.add(topology.jump.identity_file)  # the key both test sshds authorize
        assert len(agent.listed()) == 1
        by_config = how == "IdentityAgent"
        user = make_user(_agent_config(topology, agent.socket if by_config else None),
                         env={} if by_config else agent.env())
        logged_in(user.fab("status", host="lab-target"), "lab-bastion", "lab-target")
        # Without the agent the same config gets nowhere: the key came from it.
        user.fab("logout", host="lab-target").ok()
        agent.stop()
        refused(user.fab("status", host="lab-target"), "lab-bastion")
    finally:
        agent.stop()


# -- Kerberos (GSSAPI) ---------------------------------------------------------------------------------

class KerberosSite:
    def __init__(self, root: Path) -> None:
        ok, why = kdc_available()
        need(ok, why)
        self.kdc: Kdc = start_kdc(root / "kdc")
        try:
            # The client asks for host/<the name it connects to> (GSSAPITrustDNS no): "localhost", a
            # name from /etc/hosts, so no line has to be added there.
            self.server = start_sshd_gssapi(root, "krbhost", self.kdc, service_host="localhost")
            self.ticket = self.kdc.kinit(self.server.user)
        except BaseException:
            self.kdc.stop()
            raise

    def config(self, known_hosts: Path, *, hostname: str = "localhost") -> str:
        """``hostname`` other than the keytab's name: ``GSSAPIServerIdentity`` names the service."""
        identity = "    GSSAPIServerIdentity localhost\n" if hostname != "localhost" else ""
        return f"""
Host krbhost
    HostName {hostname}
    Port {self.server.port}
    User {self.server.user}
    GSSAPIAuthentication yes
    GSSAPITrustDNS no
{identity}    PubkeyAuthentication no
    UserKnownHostsFile {known_hosts}
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 5
"""

    def close(self) -> None:
        self.server.stop()
        self.kdc.stop()

    def known_hosts(self, path: Path, hostname: str = "localhost") -> Path:
        assert self.server.host_key is not None
        path.write_text(f"{known_hosts_name(hostname, self.server.port)} {public_line(self.server.host_key)}\n")
        return path


@pytest.fixture(scope="module")
def kerberos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KerberosSite]:
    site = KerberosSite(tmp_path_factory.mktemp("krb"))
    try:
        yield site
    finally:
        site.close()


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_a_kerberos_ticket_logs_in_without_a_key(kerberos: KerberosSite, make_user, tmp_path: Path,
                                                 hostname: str) -> None:
    """By name (host/localhost, the name ssh connects to), or by address with GSSAPIServerIdentity."""
    site = kerberos
    known = site.known_hosts(tmp_path / "known_hosts", hostname)
    user = make_user(site.config(known, hostname=hostname), env=site.ticket)
    before = accepted(site.server, "gssapi-with-mic")
    logged_in(user.fab("status", host="krbhost"), "krbhost")
    logged_in(user.fab("status", host="krbhost"), "krbhost")
    assert accepted(site.server, "gssapi-with-mic") == before + 1
    assert f"{site.server.user}@{site.kdc.realm}" in site.server.log_path.read_text()


def test_without_a_ticket_the_kerberos_host_is_refused_in_one_line(kerberos: KerberosSite, make_user,
                                                                   tmp_path: Path) -> None:
    site = kerberos
    known = site.known_hosts(tmp_path / "known_hosts")
    no_ticket = {**site.ticket, "KRB5CCNAME": f"FILE:{tmp_path / 'no-such-cache'}"}  # no kinit
    user = make_user(site.config(known), env=no_ticket)
    started = time.monotonic()
    refused(user.fab("status", host="krbhost"), "krbhost", "no Kerberos ticket", "gssapi-with-mic")
    assert time.monotonic() - started < 30


# -- FIDO (sk-) keys: no hardware here -----------------------------------------------------------------

@pytest.mark.parametrize("transport", ["openssh", "paramiko"])
def test_security_key_settings_pass_through_untouched(sshd_server: SshServer, make_user, tmp_path: Path,
                                                      transport: str) -> None:
    """What labhop can check without a FIDO device: an sk- key type in known_hosts (also as a CA),
    SecurityKeyProvider, an sk IdentityFile and sk algorithms in ssh_config do not make it refuse
    anything; the login itself uses the ordinary key listed after it. A login WITH a security key is
    not tested (no hardware): it is OpenSSH's own, as the other keys."""
    server = sshd_server
    known = tmp_path / "known_hosts"
    sk_key = security_key_stub(tmp_path / "id_ed25519_sk")  # as ssh-keygen -t ed25519-sk writes it
    sk_ca = security_key_stub(tmp_path / "sk_ca")
    known.write_text(f"elsewhere.example {public_line(sk_key)}\n@cert-authority *.example {public_line(sk_ca)}\n"
                     + server.known_hosts_line + "\n")
    user = make_user(f"""
Host fido
    HostName {server.address}
    Port {server.port}
    User {server.user}
    SecurityKeyProvider internal
    PubkeyAcceptedAlgorithms sk-ssh-ed25519@openssh.com,sk-ecdsa-sha2-nistp256@openssh.com,ssh-ed25519
    IdentityFile {sk_key}
    IdentityFile {server.identity_file}
    IdentitiesOnly yes
    UserKnownHostsFile {known}
    StrictHostKeyChecking yes
    BatchMode yes
""", env={"LABHOP_TRANSPORT": transport})
    result = user.fab("status", host="fido").ok()
    assert "not running" in result.stdout or "running: pid" in result.stdout, result.output


def test_a_kerberos_bastion_in_front_of_a_key_target(kerberos: KerberosSite, sshd_server: SshServer, make_user,
                                                      tmp_path: Path) -> None:
    """The usual HPC shape: the login node takes the ticket, the node behind it a key; one login each."""
    site, node = kerberos, sshd_server
    known = site.known_hosts(tmp_path / "known_hosts")
    with known.open("a") as out:
        out.write(node.known_hosts_line + "\n")
    user = make_user(site.config(known) + f"""
Host node
    HostName {node.address}
    Port {node.port}
    User {node.user}
    ProxyJump krbhost
    IdentityFile {node.identity_file}
    IdentitiesOnly yes
    UserKnownHostsFile {known}
    StrictHostKeyChecking yes
    BatchMode yes
""", env=site.ticket)
    before = accepted(site.server, "gssapi-with-mic")
    logged_in(user.fab("status", host="node"), "krbhost", "node")
    logged_in(user.fab("status", host="node"), "krbhost", "node")
    assert accepted(site.server, "gssapi-with-mic") == before + 1
