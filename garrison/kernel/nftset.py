"""The per-element counters of an nftables set, read over netlink (NFT_MSG_GETSETELEM dump) from a
socket opened in the set's network namespace: what an `update @set { key }` statement on a set with
`counter` counted in the kernel, one element per distinct key. Why: counting there costs a packet a
hash update and user space nothing per packet; reading the set is one dump (no `nft` process).
Mechanism only."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

from garrison.kernel.netlink import NLMSG, attr, attrs

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETSETELEM = 13
NFPROTO_INET = 1
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_EXPR, NFTA_SET_ELEM_EXPRESSIONS = 1, 7, 11
NFTA_DATA_VALUE = 1
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_COUNTER_PACKETS = 2

_NFGEN = struct.Struct("=BBH")


def open_socket(netns: str) -> socket.socket:
    """A netfilter netlink socket in the network namespace at `netns` (a /proc/<pid>/ns/net path)."""
    from garrison.kernel.netns import socket_in_netns

    sock = socket_in_netns(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.settimeout(1.0)
    return sock


def counters(sock: socket.socket, table: str, name: str, family: int = NFPROTO_INET) -> dict[bytes, int]:
    """{key bytes (as the kernel stores it: each field of a concatenation padded to 4 bytes): packets}
    of every element of set `name` in `table`; {} when the set does not exist."""
    body = _NFGEN.pack(family, 0, 0) + attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0") + attr(
        NFTA_SET_ELEM_LIST_SET, name.encode() + b"\0"
    )
    msg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM
    sock.send(NLMSG.pack(NLMSG.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
    out: dict[bytes, int] = {}
    while True:
        data = sock.recv(1 << 20)
        off = 0
        while off + NLMSG.size <= len(data):
            length, kind, _flags, _seq, _pid = NLMSG.unpack_from(data, off)
            if length < NLMSG.size or kind == NLMSG_DONE:
                return out
            if kind == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, off + NLMSG.size)
                if err in (0, -2):  # ENOENT: no such table or set (not applied yet, or cleared)
                    return out
                raise OSError(-err, f"nftables set {table}/{name}")
            for k, v in attrs(data[off + NLMSG.size + _NFGEN.size : off + length]):
                if k == NFTA_SET_ELEM_LIST_ELEMENTS:
                    out.update(_elements(v))
            off += (length + 3) & ~3


def _elements(nested: bytes) -> Iterator[tuple[bytes, int]]:
    for k, elem in attrs(nested):
        if k != NFTA_LIST_ELEM:
            continue
        key, packets = b"", 0
        for ek, ev in attrs(elem):
            if ek == NFTA_SET_ELEM_KEY:
                key = next((v for dk, v in attrs(ev) if dk == NFTA_DATA_VALUE), b"")
            elif ek == NFTA_SET_ELEM_EXPR:
                packets += _counter(ev)
            elif ek == NFTA_SET_ELEM_EXPRESSIONS:
                packets += sum(_counter(x) for lk, x in attrs(ev) if lk == NFTA_LIST_ELEM)
        if key:
            yield key, packets


def _counter(expr: bytes) -> int:
    name, data = b"", b""
    for k, v in attrs(expr):
        if k == NFTA_EXPR_NAME:
            name = v.split(b"\0", 1)[0]
        elif k == NFTA_EXPR_DATA:
            data = v
    if name != b"counter":
        return 0
    return next((int.from_bytes(v[:8], "big") for k, v in attrs(data) if k == NFTA_COUNTER_PACKETS), 0)
