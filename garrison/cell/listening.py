"""Listening sockets of a container, read from its network namespace's /proc/<pid>/net tables (the
kernel's own socket lists: TCP in LISTEN, UDP bound and unconnected). Mechanism only; the decision is
the shared evaluator's `decide_bind`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"


@dataclass(frozen=True, order=True)
class Listener:
    protocol: str  # tcp | udp
    port: int
    address: str  # local address as the kernel reports it (hex decoded)

    @property
    def label(self) -> str:
        return f"{self.protocol}/{self.port}"


def _address(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]  # four host-order 32-bit words
    full = b"".join(words)
    return ":".join(full[i:i + 2].hex() for i in range(0, 16, 2))


def listeners(pid: int) -> set[Listener] | None:
    """Every listening TCP socket and bound, unconnected UDP socket in the network namespace of `pid`;
    None when the process is gone."""
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
