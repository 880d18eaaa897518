"""Listening sockets of a container (TCP in LISTEN, UDP bound and unconnected), asked of the kernel
through a sock_diag socket in the container's network namespace, or read from its /proc/<pid>/net
tables where that is not possible. Mechanism only; the decision is the shared evaluator's `decide_bind`."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from garrison.kernel import sock_diag

_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"


@dataclass(frozen=True, order=True)
class Listener:
    protocol: str  # tcp | udp
    port: int
    address: str  # local address, e.g. 127.0.0.1 or ::1

    @property
    def label(self) -> str:
        return f"{self.protocol}/{self.port}"


def _address(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]  # four host-order 32-bit words
    return str(ipaddress.IPv6Address(b"".join(words)))


def listeners(pid: int, diag: socket.socket | None = None) -> set[Listener] | None:
    """Every listening TCP socket and bound, unconnected UDP socket in the network namespace of `pid`;
    None when the process is gone. With `diag` (a sock_diag socket in that namespace) the kernel is
    asked directly, which is ~100x cheaper than the /proc tables (see kernel/sock_diag.py)."""
    if diag is not None:
        try:
            return {Listener(proto, port, addr) for proto, port, addr in sock_diag.listening(diag)}
        except OSError:
            pass  # the /proc tables below
    out: set[Listener] = set()
    for table, proto, state in (("tcp", "tcp", _TCP_LISTEN), ("tcp6", "tcp", _TCP_LISTEN),
                                ("udp", "udp", _UDP_UNCONNECTED), ("udp6", "udp", _UDP_UNCONNECTED)):
        try:
            text = Path(f"/proc/{pid}/net/{table}").read_text()
        except FileNotFoundError:
            continue  # no IPv6 in this kernel
        except OSError:
            return None
        for line in text.splitlines()[1:]:
            f = line.split()
            if len(f) < 4 or f[3] != state:
                continue
            local, _, port = f[1].rpartition(":")
            if proto == "udp" and not f[2].endswith(":0000"):
                continue
            try:
                out.add(Listener(proto, int(port, 16), _address(local)))
            except ValueError:
                continue
    return out
