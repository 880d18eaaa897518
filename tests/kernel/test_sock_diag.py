"""sock_diag's listening sockets are the ones the /proc tables list: TCP in LISTEN and bound,
unconnected UDP, v4 and v6; connected or accepted sockets are not listed."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from garrison.cell import listening
from garrison.kernel import sock_diag


@pytest.fixture
def sockets() -> Iterator[dict[str, socket.socket]]:
    made: dict[str, socket.socket] = {}
    tcp4 = made["tcp4"] = socket.socket()
    tcp4.bind(("127.0.0.1", 0))
    tcp4.listen()
    tcp6 = made["tcp6"] = socket.socket(socket.AF_INET6)
    tcp6.bind(("::1", 0))
    tcp6.listen()
    udp4 = made["udp4"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp4.bind(("127.0.0.1", 0))
    udp6 = made["udp6"] = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp6.bind(("::1", 0))
    connected = made["udp-connected"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    connected.connect(("127.0.0.1", udp4.getsockname()[1]))
    client = made["tcp-client"] = socket.create_connection(tcp4.getsockname()[:2])
    made["tcp-accepted"] = tcp4.accept()[0]
    assert client
    yield made
    for s in made.values():
        s.close()


def _port(s: socket.socket) -> int:
    return int(s.getsockname()[1])


def test_diag_lists_listeners_like_proc(sockets: dict[str, socket.socket]) -> None:
    ours = {_port(s) for s in sockets.values()}
    with sock_diag.open_diag() as diag:
        fast = {x for x in listening.listeners(os.getpid(), diag) or set() if x.port in ours}
    slow = {x for x in listening.listeners(os.getpid()) or set() if x.port in ours}
    assert fast == slow
    assert {(x.protocol, x.port, x.address) for x in fast} == {
        ("tcp", _port(sockets["tcp4"]), "127.0.0.1"),
        ("tcp", _port(sockets["tcp6"]), "::1"),
        ("udp", _port(sockets["udp4"]), "127.0.0.1"),
        ("udp", _port(sockets["udp6"]), "::1"),
    }  # the connected UDP socket and both ends of the TCP connection are not listeners


def test_closed_listener_is_gone(sockets: dict[str, socket.socket]) -> None:
    port = _port(sockets["tcp4"])
    sockets["tcp4"].close()
    with sock_diag.open_diag() as diag:
        assert all(p != port or proto != "tcp" for proto, p, _a in sock_diag.listening(diag))
