"""tasks/ssh/tcp.py: the socket tuning under paramiko's connections, on a real loopback TCP pair."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from labhop.ssh.tcp import QuickAckSocket, low_latency


@pytest.fixture
def tcp_pair():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname(), timeout=7)
    peer, _ = server.accept()
    yield client, peer
    for s in (client, peer, server):
        s.close()


def test_a_tcp_socket_gets_nodelay_and_quickack_and_keeps_working(tcp_pair) -> None:
    client, peer = tcp_pair
    tuned = low_latency(client)
    assert tuned.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert tuned.gettimeout() == 7  # what paramiko set stays set
    if hasattr(socket, "TCP_QUICKACK"):
        assert isinstance(tuned, QuickAckSocket)
        assert low_latency(tuned) is tuned  # tuned once
    peer.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
    assert tuned.recv(64) == b"SSH-2.0-OpenSSH_9.2\r\n"
    tuned.sendall(b"SSH-2.0-paramiko\r\n")
    assert peer.recv(64) == b"SSH-2.0-paramiko\r\n"


def test_anything_but_a_tcp_socket_is_left_as_it_is() -> None:
    class Channel:  # a paramiko Channel to the next hop, or a ProxyCommand
        pass

    channel = Channel()
    assert low_latency(channel) is channel
    a, b = socket.socketpair()
    try:
        assert low_latency(a) is a
    finally:
        a.close()
        b.close()


def test_the_first_debug_message_is_answered_once_with_an_ignored_one() -> None:
    from paramiko import Message

    from labhop.ssh.tcp import PromptTransport

    a, b = socket.socketpair()
    sent = threading.Event()
    calls: list[int] = []
    try:
        transport = PromptTransport(a)  # not started: only its message handling is used here

        def send_ignore(byte_count=None) -> None:
            calls.append(byte_count)
            sent.set()

        transport.send_ignore = send_ignore
        for _ in range(2):
            debug = Message()
            debug.add_boolean(False)
            debug.add_string(b"/home/u/.ssh/authorized_keys:1: key options: agent-forwarding pty")
            debug.add_string(b"")
            debug.rewind()
            transport._parse_debug(debug)
        assert sent.wait(5)
        time.sleep(0.1)
        assert calls == [1]
    finally:
        a.close()
        b.close()
