"""One line for each fault an SSH connection raises, matched by type (real paramiko exceptions)."""
from __future__ import annotations

import socket

import paramiko
import pytest
from paramiko.ssh_exception import NoValidConnectionsError

from labhop.errors import LabhopError
from labhop.ssh.faults import describe_connection_error



class _Key:
    def get_base64(self) -> str:
        return "AAAA"


@pytest.mark.parametrize("exc, line", [
    (LabhopError("host key for x refused"), "host key for x refused"),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
     "cannot resolve host name (Name or service not known); is it in inventory.toml or ssh_config?"),
    (NoValidConnectionsError({("10.0.0.2", 22): ConnectionRefusedError(111, "Connection refused")}),
     "cannot connect to 10.0.0.2:22: Connection refused"),
    (ConnectionRefusedError(111, "Connection refused"), "connection refused: [Errno 111] Connection refused"),
    (socket.timeout("timed out"), "connection timed out: timed out"),
    (paramiko.AuthenticationException("Authentication failed."),
     "SSH authentication failed: no key or password offered was accepted"),
    (paramiko.BadAuthenticationType("Bad authentication type", ["password"]),
     "SSH authentication failed: Bad authentication type; allowed types: ['password']"),
    (paramiko.PasswordRequiredException("private key file is encrypted"),
     "SSH authentication failed: private key file is encrypted"),
    (paramiko.ChannelException(2, "Connect failed"), "SSH failed: ChannelException(2, 'Connect failed')"),
    (paramiko.SSHException("Error reading SSH protocol banner"), "SSH failed: Error reading SSH protocol banner"),
    (OSError(113, "No route to host"), "connection failed: No route to host"),
    (RuntimeError("odd"), "RuntimeError: odd"),
])
def test_each_fault_is_one_line_chosen_by_its_type(exc: BaseException, line: str) -> None:
    assert describe_connection_error(exc) == line


def test_a_changed_host_key_is_named() -> None:
    exc = paramiko.BadHostKeyException("internal", _Key(), _Key())  # type: ignore[arg-type]
    assert describe_connection_error(exc).startswith("host key mismatch: Host key for server 'internal'")
