"""Private ctypes kernel primitives the network guard needs (seccomp notify, pidfd, target memory).

Kept here until they are merged into `garrison.kernel`: the guard must be testable on its own with a
real kernel, and the supervisor module may not have every primitive yet. No policy lives here.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.ioctl.restype = ctypes.c_int

_MACHINE = platform.machine()
if _MACHINE in ("x86_64", "AMD64"):
    AUDIT_ARCH = 0xC000003E
    SYSCALLS = {
        "connect": 42,
        "sendto": 44,
        "recvfrom": 45,
        "sendmsg": 46,
        "recvmsg": 47,
        "bind": 49,
        "listen": 50,
        "sendmmsg": 307,
    }
    _NR_SECCOMP, _NR_PIDFD_OPEN, _NR_PIDFD_GETFD = 317, 434, 438
elif _MACHINE in ("aarch64", "arm64"):
    AUDIT_ARCH = 0xC00000B7
    SYSCALLS = {
        "bind": 200,
        "listen": 201,
        "connect": 203,
        "sendto": 206,
        "recvfrom": 207,
        "sendmsg": 211,
        "recvmsg": 212,
        "sendmmsg": 269,
    }
    _NR_SECCOMP, _NR_PIDFD_OPEN, _NR_PIDFD_GETFD = 277, 434, 438
else:  # pragma: no cover - other architectures are not supported by the defender
    raise ImportError(f"unsupported architecture {_MACHINE}")

SYSCALL_NAMES = {v: k for k, v in SYSCALLS.items()}

PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1

NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)
NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp)
NOTIF_ID_VALID = 0x40082102  # _IOW('!', 2, __u64)
NOTIF_SET_FLAGS = 0x40082104  # _IOW('!', 4, __u64)
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1

_NOTIF = struct.Struct("=QII" + "iIQ6Q")  # id, pid, flags, nr, arch, ip, args[6]
_RESP = struct.Struct("=QqiI")  # id, val, error, flags


def _check(rc: int) -> int:
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return rc


def pidfd_open(pid: int) -> int:
    return _check(_libc.syscall(_NR_PIDFD_OPEN, ctypes.c_int(pid), ctypes.c_uint(0)))


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    return _check(
        _libc.syscall(_NR_PIDFD_GETFD, ctypes.c_int(pidfd), ctypes.c_int(target_fd), ctypes.c_uint(0))
    )


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


_LD_W_ABS, _JEQ_K, _RET_K = 0x20, 0x15, 0x06


def build_filter(
    nrs: list[int], nonzero_arg: dict[int, int] | None = None
) -> list[tuple[int, int, int, int]]:
    """BPF: kill on a foreign arch/x32, USER_NOTIF for `nrs`, allow the rest.

    `nonzero_arg` maps a syscall number to an argument index: that syscall is only trapped when the
    argument is non-zero (recvfrom with a source-address buffer).
    """
    nonzero_arg = nonzero_arg or {}
    Jump = int | str
    prog: list[tuple[int, Jump, Jump, int]] = [
        (_LD_W_ABS, 0, 0, 4),  # arch
        (_JEQ_K, 1, 0, AUDIT_ARCH),
        (_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, 0),  # nr
    ]
    if _MACHINE in ("x86_64", "AMD64"):  # x32 ABI shares the arch value: refuse it
        prog += [(0x35, 0, 1, 0x40000000), (_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS)]  # JGE
    for nr in nrs:
        if nr not in nonzero_arg:
            prog.append((_JEQ_K, "NOTIF", 0, nr))
    for nr in nrs:
        if nr in nonzero_arg:
            off = 16 + 8 * nonzero_arg[nr]
            prog += [
                (_JEQ_K, 0, 4, nr),
                (_LD_W_ABS, 0, 0, off),
                (_JEQ_K, 0, "NOTIF", 0),
                (_LD_W_ABS, 0, 0, off + 4),
                (_JEQ_K, "ALLOW", "NOTIF", 0),
            ]
    prog += [(_RET_K, 0, 0, SECCOMP_RET_ALLOW), (_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF)]
    labels = {"ALLOW": len(prog) - 2, "NOTIF": len(prog) - 1}

    def rel(i: int, j: Jump) -> int:
        return labels[j] - i - 1 if isinstance(j, str) else j

    return [(c, rel(i, jt), rel(i, jf), k) for i, (c, jt, jf, k) in enumerate(prog)]


def install_listener(names: list[str], nonzero_arg: dict[str, int] | None = None) -> int:
    """Install a notify filter on the calling thread for `names`; returns the listener fd.

    Only for processes about to exec the app (tests, bench): the real defender's supervisor owns this.
    """
    cond = {SYSCALLS[n]: i for n, i in (nonzero_arg or {}).items()}
    prog = build_filter([SYSCALLS[n] for n in names], cond)
    arr = (_SockFilter * len(prog))(*[_SockFilter(*p) for p in prog])
    fprog = _SockFprog(len(prog), arr)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    for flags in (
        SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
        SECCOMP_FILTER_FLAG_NEW_LISTENER,
    ):
        rc = _libc.syscall(
            _NR_SECCOMP, ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags), ctypes.byref(fprog)
        )
        if rc >= 0:
            return int(rc)
        if ctypes.get_errno() != errno.EINVAL:
            break
    _check(-1)
    return -1  # unreachable


def set_sync_wakeup(listener: int) -> bool:
    """Synchronous wake-up (6.6+): the flag is passed by value, not by pointer."""
    return _libc.ioctl(listener, NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) == 0


def notif_recv(listener: int) -> tuple[int, int, int, tuple[int, ...]]:
    """Block for one notification: (id, tid, nr, args)."""
    buf = ctypes.create_string_buffer(_NOTIF.size)
    _check(_libc.ioctl(listener, NOTIF_RECV, buf))
    nid, tid, _flags, nr, _arch, _ip, *args = _NOTIF.unpack(buf.raw)
    return nid, tid, nr, tuple(args)


def notif_send(listener: int, nid: int, val: int = 0, error: int = 0, flags: int = 0) -> None:
    """Reply; retried on EINTR (the kernel takes the notify lock interruptibly)."""
    buf = ctypes.create_string_buffer(_RESP.pack(nid, val, error, flags), _RESP.size)
    while _libc.ioctl(listener, NOTIF_SEND, buf) < 0:
        if ctypes.get_errno() != errno.EINTR:
            _check(-1)


def notif_id_valid(listener: int, nid: int) -> bool:
    """False only when the kernel says the id is gone (ENOENT); EINTR is retried."""
    v = ctypes.c_uint64(nid)
    while _libc.ioctl(listener, NOTIF_ID_VALID, ctypes.byref(v)) < 0:
        e = ctypes.get_errno()
        if e != errno.EINTR:
            return e != errno.ENOENT and e != errno.EBADF
    return True


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc.process_vm_readv.restype = ctypes.c_ssize_t
_vm_readv_ok = True


def read_mem(pid: int, addr: int, size: int) -> bytes:
    """Read target memory: process_vm_readv, else /proc/<pid>/mem (Garden blocks the former)."""
    global _vm_readv_ok
    if size <= 0:
        return b""
    if _vm_readv_ok:
        buf = ctypes.create_string_buffer(size)
        local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), size)
        remote = _IoVec(addr, size)
        n = _libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if n == size:
            return buf.raw
        e = ctypes.get_errno()
        if n < 0 and e in (errno.EPERM, errno.ENOSYS):
            _vm_readv_ok = False
        elif n < 0:
            raise OSError(e, os.strerror(e))
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.pread(fd, size, addr)
    finally:
        os.close(fd)
    if len(data) != size:
        raise OSError(errno.EFAULT, "short read of target memory")
    return data


def write_mem(pid: int, addr: int, data: bytes) -> None:
    """Write into target memory through /proc/<pid>/mem (for results of emulated syscalls)."""
    fd = os.open(f"/proc/{pid}/mem", os.O_WRONLY | os.O_CLOEXEC)
    try:
        if os.pwrite(fd, data, addr) != len(data):
            raise OSError(errno.EFAULT, "short write to target memory")
    finally:
        os.close(fd)


# Raw socket calls on a descriptor taken from the target: the exact address bytes already checked.
_libc.connect.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc.sendto.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_uint,
]
_libc.sendto.restype = ctypes.c_ssize_t
_libc.sendmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
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


_libc.getsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_libc.getsockname.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_libc.bind.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc.recvfrom.argtypes = [
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_void_p,
]
_libc.recvfrom.restype = ctypes.c_ssize_t
_SOL_SOCKET, _SO_TYPE = 1, 3


def sock_type(fd: int) -> int:
    """SOCK_STREAM/SOCK_DGRAM/…; raises OSError(ENOTSOCK) for a non-socket."""
    val = ctypes.c_int(0)
    ln = ctypes.c_uint(ctypes.sizeof(val))
    _check(_libc.getsockopt(fd, _SOL_SOCKET, _SO_TYPE, ctypes.byref(val), ctypes.byref(ln)))
    return val.value


def getsockopt(fd: int, level: int, opt: int, size: int) -> bytes:
    """Raw getsockopt without wrapping the fd in a Python socket (which may touch O_NONBLOCK)."""
    buf = ctypes.create_string_buffer(size)
    ln = ctypes.c_uint(size)
    _check(_libc.getsockopt(fd, level, opt, buf, ctypes.byref(ln)))
    return buf.raw[: ln.value].ljust(size, b"\0")


def sock_name(fd: int) -> bytes:
    buf = ctypes.create_string_buffer(128)
    ln = ctypes.c_uint(128)
    _check(_libc.getsockname(fd, buf, ctypes.byref(ln)))
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
