"""Raw socket calls on descriptors taken from (or made for) a supervised app: connect, sendto,
sendmsg, bind, recvfrom with the exact address bytes already checked, and socket facts read without
wrapping the fd in a Python socket (which may touch O_NONBLOCK). No policy in here."""

from __future__ import annotations

import ctypes
import os
import socket
from dataclasses import dataclass

from garrison.kernel._libc import check
from garrison.kernel._libc import libc as _libc
from garrison.kernel.procmem import IoVec as _IoVec

# Raw socket calls on a descriptor taken from the target: the exact address bytes already checked.
_int, _bytes, _ptr, _size, _len = (
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_uint,
)
_libc.connect.argtypes = [_int, _bytes, _len]
_libc.sendto.argtypes = [_int, _bytes, _size, _int, _bytes, _len]
_libc.sendto.restype = ctypes.c_ssize_t
_libc.sendmsg.argtypes = [_int, _ptr, _int]
_libc.sendmsg.restype = ctypes.c_ssize_t


def raw_connect(fd: int, sockaddr: bytes) -> int:
    """connect(2) returning 0 or an errno (never raises): the value to hand back to the app."""
    if _libc.connect(fd, sockaddr, len(sockaddr)) == 0:
        return 0
    return ctypes.get_errno()


def raw_sendto(fd: int, data: bytes, flags: int, sockaddr: bytes | None) -> tuple[int, int]:
    """sendto(2) → (bytes sent, errno)."""
    n = _libc.sendto(fd, data, len(data), flags, sockaddr, len(sockaddr) if sockaddr else 0)
    return (int(n), 0) if n >= 0 else (-1, ctypes.get_errno())


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("namelen", ctypes.c_uint),
        ("iov", ctypes.POINTER(_IoVec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_char_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


def raw_sendmsg(fd: int, name: bytes | None, data: bytes, control: bytes, flags: int) -> tuple[int, int]:
    """sendmsg(2) with one iovec holding the gathered payload → (bytes sent, errno)."""
    buf = ctypes.create_string_buffer(data, len(data)) if data else None
    iov = _IoVec(ctypes.cast(buf, ctypes.c_void_p) if buf is not None else None, len(data))
    msg = _MsgHdr(name, len(name) if name else 0, ctypes.pointer(iov), 1, control or None, len(control), 0)
    n = _libc.sendmsg(fd, ctypes.byref(msg), flags)
    return (int(n), 0) if n >= 0 else (-1, ctypes.get_errno())


_libc.getsockopt.argtypes = [_int, _int, _int, _ptr, _ptr]
_libc.getsockname.argtypes = [_int, _ptr, _ptr]
_libc.bind.argtypes = [_int, _bytes, _len]
_libc.recvfrom.argtypes = [_int, _ptr, _size, _int, _ptr, _ptr]
_libc.recvfrom.restype = ctypes.c_ssize_t
_SOL_SOCKET, _SO_TYPE, _SO_PROTOCOL, _SO_DOMAIN = 1, 3, 38, 39


def _int_opt(fd: int, opt: int) -> int:
    val = ctypes.c_int(0)
    ln = ctypes.c_uint(ctypes.sizeof(val))
    check(_libc.getsockopt(fd, _SOL_SOCKET, opt, ctypes.byref(val), ctypes.byref(ln)), "getsockopt")
    return val.value


def sock_type(fd: int) -> int:
    """SOCK_STREAM/SOCK_DGRAM/…; raises OSError(ENOTSOCK) for a non-socket."""
    return _int_opt(fd, _SO_TYPE)


def sock_kind(fd: int) -> tuple[int, int, int]:
    """(family, type, protocol) of a socket we hold."""
    return _int_opt(fd, _SO_DOMAIN), _int_opt(fd, _SO_TYPE), _int_opt(fd, _SO_PROTOCOL)


# system.sockprotoname of a socket inode (sk->sk_prot->name) → (family, type, protocol). Read through
# /proc/<tid>/fd/<n> it tells what an app's socket is without holding it (Garden blocks pidfd_getfd).
PROTO_NAMES: dict[str, tuple[int, int, int]] = {
    "TCP": (2, 1, 6),
    "TCPv6": (10, 1, 6),
    "UDP": (2, 2, 17),
    "UDPv6": (10, 2, 17),
    "UDP-Lite": (2, 2, 136),
    "UDPLITEv6": (10, 2, 136),
    "MPTCP": (2, 1, 262),
    "MPTCPv6": (10, 1, 262),
    "PING": (2, 2, 1),
    "PINGv6": (10, 2, 58),
    "RAW": (2, 3, 0),
    "RAWv6": (10, 3, 0),
}
NON_IP_PROTO_NAMES = frozenset(
    {"UNIX", "UNIX-STREAM", "NETLINK", "PACKET", "AF_VSOCK", "ALG", "XDP", "KEY", "TIPC", "CAN_RAW"}
)


def proto_name(tid: int, fd: int) -> str:
    """The kernel's protocol name of the app's fd (OSError ENOENT if not open, ENODATA/EOPNOTSUPP
    when it is not a socket)."""
    return os.getxattr(f"/proc/{tid}/fd/{fd}", "system.sockprotoname").rstrip(b"\0").decode()


def getsockopt(fd: int, level: int, opt: int, size: int) -> bytes:
    """Raw getsockopt without wrapping the fd in a Python socket (which may touch O_NONBLOCK)."""
    buf = ctypes.create_string_buffer(size)
    ln = ctypes.c_uint(size)
    check(_libc.getsockopt(fd, level, opt, buf, ctypes.byref(ln)), "getsockopt")
    return buf.raw[: ln.value].ljust(size, b"\0")


def sock_name(fd: int) -> bytes:
    buf = ctypes.create_string_buffer(128)
    ln = ctypes.c_uint(128)
    check(_libc.getsockname(fd, buf, ctypes.byref(ln)), "getsockname")
    return buf.raw[: ln.value]


def raw_bind(fd: int, sockaddr: bytes) -> int:
    if _libc.bind(fd, sockaddr, len(sockaddr)) == 0:
        return 0
    return ctypes.get_errno()


def raw_recvfrom(fd: int, size: int, flags: int) -> tuple[bytes, int, int]:
    """recvfrom(2) → (data, full datagram length (MSG_TRUNC aware), errno)."""
    buf = ctypes.create_string_buffer(max(size, 1))
    n = _libc.recvfrom(fd, buf, size, flags, None, None)
    if n < 0:
        return b"", -1, ctypes.get_errno()
    return buf.raw[: min(int(n), size)], int(n), 0


_libc.setsockopt.argtypes = [_int, _int, _int, _bytes, _len]


def raw_setsockopt(fd: int, level: int, opt: int, value: bytes) -> int:
    """setsockopt(2) with the exact value bytes → 0 or errno."""
    if _libc.setsockopt(fd, level, opt, value, len(value)) == 0:
        return 0
    return ctypes.get_errno()


def new_socket(family: int, type_: int, proto: int) -> int:
    """A socket of our own (close-on-exec in this process), as a bare fd."""
    return socket.socket(family, type_ | socket.SOCK_CLOEXEC, proto).detach()


def fd_info(tid: int, fd: int) -> tuple[int, int]:
    """(file status flags incl. O_NONBLOCK and O_CLOEXEC, inode) of an app's descriptor, from
    /proc/<tid>/fdinfo/<fd>. OSError ENOENT when it is not open."""
    flags = ino = 0
    with open(f"/proc/{tid}/fdinfo/{fd}", "rb") as f:
        for line in f:
            if line.startswith(b"flags:"):
                flags = int(line.split()[1], 8)
            elif line.startswith(b"ino:"):
                ino = int(line.split()[1])
    return flags, ino


@dataclass(frozen=True)
class ProcNetEntry:
    """One socket's row in /proc/<tid>/net/{tcp,tcp6,udp,udp6} (the app's network namespace)."""

    local: bytes  # the packed local address (4 or 16 bytes, network order)
    local_port: int
    state: int  # TCP_ESTABLISHED = 1, TCP_SYN_SENT = 2, TCP_LISTEN = 10, TCP_CLOSE = 7
    rx_queue: int


def proc_net_entry(tid: int, table: str, ino: int) -> ProcNetEntry | None:
    """The row of socket inode `ino` in /proc/<tid>/net/<table>, None if it is not listed (an
    unbound UDP socket; a TCP socket that is neither listening nor connected)."""
    want = str(ino).encode()
    with open(f"/proc/{tid}/net/{table}", "rb") as f:
        next(f, None)
        for line in f:
            cols = line.split()
            if len(cols) > 9 and cols[9] == want:
                addr, port = cols[1].split(b":")
                raw = bytes.fromhex(addr.decode())
                # the kernel prints each 32-bit word in host (little-endian) order
                packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                return ProcNetEntry(packed, int(port, 16), int(cols[3], 16), int(cols[4].split(b":")[1], 16))
    return None
