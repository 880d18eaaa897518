"""Learning's per-destination flow counts on the cell: our table's `count_flows` sets count every new
TCP/UDP flow in the kernel (v4 and v6), and learned_flows() reads them back over netlink from a
socket in that namespace (kernel/nftset.py) — in a network namespace made for the test."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from garrison.cell import network
from garrison.kernel import nftset
from garrison.kernel.netns import run_in_netns
from garrison.policy.model import NetworkControls


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"garrison-nftset-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _load(ns: str, script: str) -> None:
    subprocess.run(["nsenter", f"--net={ns}", "nft", "-f", "-"], input=script, text=True, check=True)


def _connects(ns: str) -> None:
    def run() -> None:
        for port in (7001, 7001, 7001, 7002):
            with socket.socket() as s:
                s.connect_ex(("127.0.0.1", port))
        with socket.socket(socket.AF_INET6) as s:
            s.connect_ex(("::1", 7003))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.connect(("127.0.0.1", 7004))  # one flow, however many datagrams
            u.send(b"x")

    run_in_netns(ns, run)


def test_new_flows_are_counted_per_destination_in_the_kernel(netns: str) -> None:
    rule = NetworkControls.model_validate({"effect": "alert"})
    _load(netns, network.ruleset(rule, count_flows=True))
    with nftset.open_socket(netns) as sock:
        assert network.learned_flows(sock) == {}
        _connects(netns)
        assert network.learned_flows(sock) == {
            ("127.0.0.1", "tcp", 7001): 3,
            ("127.0.0.1", "tcp", 7002): 1,
            ("::1", "tcp", 7003): 1,
            ("127.0.0.1", "udp", 7004): 1,
        }
        _load(netns, network.clear_script())  # no table: nothing, not an error
        assert network.learned_flows(sock) == {}
    with pytest.raises(OSError):
        nftset.open_socket(f"/proc/{2**22 + os.getpid()}/ns/net")
