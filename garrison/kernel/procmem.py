"""Reading another process's memory: process_vm_readv, falling back to /proc/<pid>/mem
(Garden's seccomp profile blocks process_vm_readv)."""

from __future__ import annotations

import ctypes
import errno
import os

from garrison.kernel._libc import syscall

PAGE = 4096


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_vm_readv_ok: bool | None = None  # learnt once: None = untested


def vm_readv(pid: int, addr: int, size: int) -> bytes:
    """process_vm_readv; may return fewer bytes at an unmapped boundary. Raises OSError."""
    buf = ctypes.create_string_buffer(size)
    local = IoVec(ctypes.cast(buf, ctypes.c_void_p), size)
    remote = IoVec(addr, size)
    n = syscall("process_vm_readv", pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    return buf.raw[:n]


def mem_read(memfd: int, addr: int, size: int) -> bytes:
    """pread on an open /proc/<pid>/mem; EIO at unmapped addresses."""
    return os.pread(memfd, size, addr)


class MemReader:
    """Reads one target's memory, choosing the mechanism on first use and remembering it."""

    def __init__(self, tid: int) -> None:
        self.tid = tid
        self._memfd: int | None = None

    def close(self) -> None:
        if self._memfd is not None:
            os.close(self._memfd)
            self._memfd = None

    def read(self, addr: int, size: int) -> bytes:
        global _vm_readv_ok
        if size <= 0:
            return b""
        if _vm_readv_ok is not False:
            try:
                data = vm_readv(self.tid, addr, size)
                _vm_readv_ok = True
                return data
            except OSError as exc:
                if exc.errno in (errno.EPERM, errno.ENOSYS) and _vm_readv_ok is None:
                    _vm_readv_ok = False
                elif exc.errno == errno.EFAULT:
                    return b""
                elif exc.errno != errno.EPERM:
                    raise
        if self._memfd is None:
            self._memfd = os.open(f"/proc/{self.tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return mem_read(self._memfd, addr, size)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise

    def read_chunked(self, addr: int, size: int) -> bytes:
        """Read up to `size` bytes, stopping quietly at the first unmapped page."""
        out = bytearray()
        while len(out) < size:
            step = min(size - len(out), PAGE - (addr % PAGE))
            chunk = self.read(addr, step)
            out += chunk
            if len(chunk) < step:
                break
            addr += step
        return bytes(out)

    def read_cstring(self, addr: int, limit: int = 4096) -> bytes:
        """A NUL-terminated string of at most `limit` bytes (page by page, so no over-read faults)."""
        out = bytearray()
        while len(out) < limit:
            step = min(limit - len(out), PAGE - (addr % PAGE))
            chunk = self.read(addr, step)
            nul = chunk.find(b"\0")
            if nul >= 0:
                out += chunk[:nul]
                return bytes(out)
            out += chunk
            if len(chunk) < step:
                break
            addr += step
        return bytes(out)


def write_mem(pid: int, addr: int, data: bytes) -> None:
    """Write into target memory through /proc/<pid>/mem (results of emulated syscalls)."""
    fd = os.open(f"/proc/{pid}/mem", os.O_WRONLY | os.O_CLOEXEC)
    try:
        if os.pwrite(fd, data, addr) != len(data):
            raise OSError(errno.EFAULT, "short write to target memory")
    finally:
        os.close(fd)


def vm_readv_available() -> bool:
    """Probe on ourselves (Garden blocks it with EPERM)."""
    buf = ctypes.create_string_buffer(b"x")
    try:
        return vm_readv(os.getpid(), ctypes.addressof(buf), 1) == b"x"
    except OSError:
        return False


def syscall_state(tid: int) -> str | None:
    """/proc/<tid>/syscall of a thread blocked in a system call: its number, six argument registers,
    stack and instruction pointers. Registers cannot be changed by another thread while it waits, so
    two equal readings during one wait belong to the same call (None: gone or not readable)."""
    try:
        with open(f"/proc/{tid}/syscall", "rb") as f:
            return f.read().decode().strip() or None
    except OSError:
        return None
