"""seccomp: a small BPF filter builder, filter install with a user-notification listener, and the
listener ioctls (RECV, SEND, ID_VALID, ADDFD, SET_FLAGS). x86_64 only; no policy in here."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from dataclasses import dataclass, field

from garrison.kernel._libc import SYSCALLS, check, libc

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ALLOW = 0x7FFF0000

SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_ADDFD_FLAG_SETFD = 1
SECCOMP_ADDFD_FLAG_SEND = 2
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1

IOCTL_NOTIF_RECV = 0xC0502100
IOCTL_NOTIF_SEND = 0xC0182101
IOCTL_NOTIF_ID_VALID = 0x40082102
IOCTL_NOTIF_ADDFD = 0x40182103
IOCTL_NOTIF_SET_FLAGS = 0x40082104

# classic BPF opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

_OFF_NR = 0
_OFF_ARCH = 4


def _arg_lo(i: int) -> int:
    return 16 + 8 * i


class SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]


class SeccompData(ctypes.Structure):
    _fields_ = [
        ("nr", ctypes.c_int32),
        ("arch", ctypes.c_uint32),
        ("instruction_pointer", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    ]


class SeccompNotif(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("data", SeccompData),
    ]


class SeccompNotifResp(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("val", ctypes.c_int64),
        ("error", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
    ]


class SeccompNotifAddfd(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("srcfd", ctypes.c_uint32),
        ("newfd", ctypes.c_uint32),
        ("newfd_flags", ctypes.c_uint32),
    ]


assert ctypes.sizeof(SeccompNotif) == 80 and ctypes.sizeof(SeccompNotifResp) == 24

libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
libc.ioctl.restype = ctypes.c_int


@dataclass(frozen=True)
class ArgEq:
    """Match when the low 32 bits of syscall argument `index` equal `value`."""

    index: int
    value: int


@dataclass
class FilterSpec:
    """What the filter does per syscall; everything not named is allowed.

    `notify_unless_flag` traps a syscall unless its arg0 has one of the given bits (clone without
    CLONE_THREAD); `notify_if_flag` (checked first, for the same syscall) traps it whenever arg0 has
    one of its bits, whatever else is set (clone with CLONE_UNTRACED, even for a thread and even with
    the exempt tag); `errno_if` returns an errno (0 = fake success) when all ArgEq match.
    """

    notify: set[str] = field(default_factory=set)
    errno: dict[str, int] = field(default_factory=dict)
    notify_unless_flag: dict[str, int] = field(default_factory=dict)
    notify_if_flag: dict[str, int] = field(default_factory=dict)
    errno_if: list[tuple[str, list[ArgEq], int]] = field(default_factory=list)
    notify_if_arg_nonzero: dict[str, int] = field(default_factory=dict)
    exempt_magic: int | None = None  # a notify_unless_flag syscall whose arg4 is this 64-bit value is allowed
    kill_foreign_abi: bool = True


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    return (code, jt, jf, k & 0xFFFFFFFF)


def build_filter(spec: FilterSpec) -> list[tuple[int, int, int, int]]:
    """Assemble the BPF program: arch check, x32 check, then one block per syscall nr."""
    prog: list[tuple[int, int, int, int]] = []
    kill = SECCOMP_RET_KILL_PROCESS
    if spec.kill_foreign_abi:
        prog += [
            _ins(_LD_W_ABS, _OFF_ARCH),
            _ins(_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
            _ins(_RET_K, kill),
            _ins(_LD_W_ABS, _OFF_NR),
            _ins(_JGE_K, X32_SYSCALL_BIT, 0, 1),
            _ins(_RET_K, kill),
        ]
    else:
        prog.append(_ins(_LD_W_ABS, _OFF_NR))
    blocks: list[tuple[int, list[tuple[int, int, int, int]]]] = []
    for name, conds, err in spec.errno_if:
        body: list[tuple[int, int, int, int]] = []
        for c in conds:
            body += [_ins(_LD_W_ABS, _arg_lo(c.index)), _ins(_JEQ_K, c.value, 0, 0)]
        # jf of every compare jumps to the trailing ALLOW; fixed up below
        body.append(_ins(_RET_K, SECCOMP_RET_ERRNO | (err & 0xFFFF)))
        body.append(_ins(_RET_K, SECCOMP_RET_ALLOW))
        n = len(body)
        fixed = []
        for i, ins in enumerate(body):
            if ins[0] == _JEQ_K:
                fixed.append((ins[0], 0, n - 1 - i - 1, ins[3]))
            else:
                fixed.append(ins)
        blocks.append((SYSCALLS[name], fixed))
    for name, bits in spec.notify_unless_flag.items():
        body = [_ins(_LD_W_ABS, _arg_lo(0))]
        always = spec.notify_if_flag.get(name, 0)
        if always:
            body.append(_ins(_JSET_K, always, 0, 0))  # jt fixed up below: to the final RET USER_NOTIF
        body += [_ins(_JSET_K, bits, 0, 1), _ins(_RET_K, SECCOMP_RET_ALLOW)]
        if spec.exempt_magic is not None:
            m = spec.exempt_magic
            body += [
                _ins(_LD_W_ABS, _arg_lo(4)),
                _ins(_JEQ_K, m & 0xFFFFFFFF, 0, 3),
                _ins(_LD_W_ABS, _arg_lo(4) + 4),
                _ins(_JEQ_K, (m >> 32) & 0xFFFFFFFF, 0, 1),
                _ins(_RET_K, SECCOMP_RET_ALLOW),
            ]
        body.append(_ins(_RET_K, SECCOMP_RET_USER_NOTIF))
        if always:
            body[1] = (_JSET_K, len(body) - 1 - 2, 0, always & 0xFFFFFFFF)
        blocks.append((SYSCALLS[name], body))
    for name, idx in spec.notify_if_arg_nonzero.items():
        body = [
            _ins(_LD_W_ABS, _arg_lo(idx)),
            _ins(_JEQ_K, 0, 0, 2),
            _ins(_LD_W_ABS, _arg_lo(idx) + 4),
            _ins(_JEQ_K, 0, 1, 0),
            _ins(_RET_K, SECCOMP_RET_USER_NOTIF),
            _ins(_RET_K, SECCOMP_RET_ALLOW),
        ]
        blocks.append((SYSCALLS[name], body))
    for name, err in spec.errno.items():
        blocks.append((SYSCALLS[name], [_ins(_RET_K, SECCOMP_RET_ERRNO | (err & 0xFFFF))]))
    for name in sorted(spec.notify):
        blocks.append((SYSCALLS[name], [_ins(_RET_K, SECCOMP_RET_USER_NOTIF)]))
    for nr, body in blocks:
        if len(body) > 255:
            raise ValueError("filter block too long")
        prog.append(_ins(_JEQ_K, nr, 0, len(body)))
        prog += body
    prog.append(_ins(_RET_K, SECCOMP_RET_ALLOW))
    return prog


def _fprog(prog: list[tuple[int, int, int, int]]) -> tuple[SockFprog, ctypes.Array[SockFilter]]:
    arr = (SockFilter * len(prog))(*[SockFilter(c, jt, jf, k) for c, jt, jf, k in prog])
    return SockFprog(len(prog), ctypes.cast(arr, ctypes.POINTER(SockFilter))), arr


def install_filter(prog: list[tuple[int, int, int, int]], *, listener: bool, flags: int = 0) -> int:
    """Install on the *calling thread*. Returns the listener fd (or 0). Needs no_new_privs first
    unless privileged. The caller retries without optional flags on EINVAL."""
    fprog, _keep = _fprog(prog)
    f = flags | (SECCOMP_FILTER_FLAG_NEW_LISTENER if listener else 0)
    ret = int(
        libc.syscall(ctypes.c_long(SYSCALLS["seccomp"]), SECCOMP_SET_MODE_FILTER, f, ctypes.byref(fprog))
    )
    return check(ret, "seccomp(SET_MODE_FILTER)")


def install_listener(prog: list[tuple[int, int, int, int]]) -> tuple[int, bool]:
    """Install with NEW_LISTENER, WAIT_KILLABLE_RECV if the kernel has it (5.19+).
    Returns (listener fd, wait_killable_recv used)."""
    try:
        return install_filter(prog, listener=True, flags=SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV), True
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    return install_filter(prog, listener=True), False


def action_available(action: int) -> bool:
    a = ctypes.c_uint32(action)
    ret = int(libc.syscall(ctypes.c_long(SYSCALLS["seccomp"]), SECCOMP_GET_ACTION_AVAIL, 0, ctypes.byref(a)))
    return ret == 0


def _ioctl(fd: int, req: int, arg: ctypes._CData | None) -> int:
    ret = libc.ioctl(fd, req, ctypes.byref(arg) if arg is not None else None)
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def set_sync_wakeup(fd: int) -> bool:
    """Ask for synchronous wake-up of the notifying thread (6.6+): lower latency per trap."""
    try:
        fcntl.ioctl(fd, IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
        return True
    except OSError:
        return False


def notif_recv(fd: int, buf: SeccompNotif) -> None:
    """Block until a notification arrives (EINTR/ENOENT are raised; the caller loops)."""
    ctypes.memset(ctypes.byref(buf), 0, ctypes.sizeof(buf))
    _ioctl(fd, IOCTL_NOTIF_RECV, buf)


def notif_send(fd: int, notif_id: int, *, val: int = 0, error: int = 0, cont: bool = False) -> bool:
    """Reply; False if the notification is gone (ENOENT: target died or syscall was interrupted)."""
    resp = SeccompNotifResp(
        notif_id, val, -error if error else 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE if cont else 0
    )
    try:
        _ioctl(fd, IOCTL_NOTIF_SEND, resp)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def notif_id_valid(fd: int, notif_id: int) -> bool:
    v = ctypes.c_uint64(notif_id)
    try:
        _ioctl(fd, IOCTL_NOTIF_ID_VALID, v)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def notif_addfd(
    fd: int, notif_id: int, srcfd: int, *, send: bool, cloexec: bool, newfd: int | None = None
) -> int:
    """Install `srcfd` into the target (ADDFD, 5.9); with send=True it is also the reply (5.14);
    with `newfd` it replaces the target's descriptor of that number atomically (SETFD, 5.9)."""
    flags = (SECCOMP_ADDFD_FLAG_SEND if send else 0) | (SECCOMP_ADDFD_FLAG_SETFD if newfd is not None else 0)
    a = SeccompNotifAddfd(notif_id, flags, srcfd, newfd or 0, os.O_CLOEXEC if cloexec else 0)
    return _ioctl(fd, IOCTL_NOTIF_ADDFD, a)
