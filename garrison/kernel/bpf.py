"""BPF objects built at install (scripts/bootstrap: `clang -target bpf`, next to their `.bpf.c`), loaded
and attached through libbpf (ctypes): their maps updated, their ring buffer read. Mechanism only.

Needs libbpf 1.x, root, a kernel with BTF (the objects are relocated against it, CO-RE) and tracefs
for tracepoint programs. `unavailable()` says what is missing."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable
from pathlib import Path

_HERE = Path(__file__).parent


def object_path(name: str) -> Path:
    return _HERE / f"{name}.bpf.o"


def _libbpf() -> ctypes.CDLL:
    """The system's libbpf: 1.x (Debian 12), else 0.x (Ubuntu 22.04 stemcells: the same calls, the
    program iterator under its older name)."""
    try:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError:
        lib = ctypes.CDLL("libbpf.so.0", use_errno=True)
    if not hasattr(lib, "bpf_object__next_program"):
        lib.bpf_object__next_program = lib.bpf_program__next  # (prev, obj) there: swapped below
        lib.garrison_next_swapped = True
    vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    for fname, res, args in (
        ("bpf_object__open_file", vp, [cp, vp]),
        ("bpf_object__load", ci, [vp]),
        ("bpf_object__close", None, [vp]),
        ("bpf_object__next_program", vp, [vp, vp]),
        ("bpf_program__attach", vp, [vp]),
        ("bpf_program__name", cp, [vp]),
        ("bpf_link__destroy", ci, [vp]),
        ("bpf_object__find_map_fd_by_name", ci, [vp, cp]),
        ("bpf_map_update_elem", ci, [ci, vp, vp, ctypes.c_uint64]),
        ("bpf_map_delete_elem", ci, [ci, vp]),
        ("ring_buffer__new", vp, [ci, vp, vp, vp]),
        ("ring_buffer__consume", ci, [vp]),
        ("ring_buffer__epoll_fd", ci, [vp]),
        ("ring_buffer__free", None, [vp]),
        ("libbpf_get_error", ctypes.c_long, [vp]),
        ("libbpf_set_print", vp, [vp]),
    ):
        fn = getattr(lib, fname)
        fn.restype, fn.argtypes = res, args
    return lib


def unavailable(name: str) -> str | None:
    """Why object `name` cannot be loaded here (None: it can be tried)."""
    if not object_path(name).exists():
        return f"BPF object {name}.bpf.o not built (clang was missing at install; scripts/bootstrap builds it)"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "the kernel has no BTF (/sys/kernel/btf/vmlinux)"
    try:
        _libbpf()
    except OSError as exc:
        return f"libbpf not found ({exc})"
    return None


_RING_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class BpfObject:
    """One object's programs, all attached; `on_record` gets each record of its ring buffer map `ring`
    (raw bytes), called from `consume()` in the caller's thread when `ring_fd` is readable."""

    def __init__(self, name: str, on_record: Callable[[bytes], None], *, ring: str = "events") -> None:
        self._lib = lib = _libbpf()
        lib.libbpf_set_print(None)  # libbpf's own stderr chatter; failures come back as errno
        self._obj: int | None = lib.bpf_object__open_file(os.fsencode(object_path(name)), None)
        if not self._obj or lib.libbpf_get_error(self._obj):
            self._obj = None
            raise OSError(ctypes.get_errno() or 22, f"BPF object {name} did not open")
        self._links: list[int] = []
        self._ring: int | None = None
        try:
            if lib.bpf_object__load(self._obj) != 0:
                err = ctypes.get_errno() or 22
                raise OSError(err, f"BPF object {name} refused by the kernel: {os.strerror(err)}")
            swapped = getattr(lib, "garrison_next_swapped", False)

            def after(prev: int | None) -> int | None:
                return lib.bpf_object__next_program(*((prev, self._obj) if swapped else (self._obj, prev)))

            prog = after(None)
            while prog:
                link = lib.bpf_program__attach(prog)
                if not link or lib.libbpf_get_error(link):
                    err = ctypes.get_errno() or 22
                    raise OSError(err, f"BPF program {lib.bpf_program__name(prog).decode()} not attached: "
                                       f"{os.strerror(err)}")
                self._links.append(link)
                prog = after(prog)
            self._on_record = on_record
            self._callback = _RING_CALLBACK(self._record)  # kept alive as long as the ring
            ring_ptr = lib.ring_buffer__new(self.map_fd(ring), self._callback, None, None)
            if not ring_ptr or lib.libbpf_get_error(ring_ptr):
                raise OSError(ctypes.get_errno() or 22, "BPF ring buffer not opened")
            self._ring = ring_ptr
            self.ring_fd: int = lib.ring_buffer__epoll_fd(ring_ptr)
        except BaseException:
            self.close()
            raise

    def map_fd(self, name: str) -> int:
        fd = self._lib.bpf_object__find_map_fd_by_name(self._obj, name.encode())
        if fd < 0:
            raise OSError(-fd, f"BPF map {name} missing")
        return int(fd)

    def update(self, map_name: str, key: bytes, value: bytes) -> None:
        k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value, len(value))
        if self._lib.bpf_map_update_elem(self.map_fd(map_name), k, v, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"BPF map {map_name} update: {os.strerror(err)}")

    def delete(self, map_name: str, key: bytes) -> None:
        self._lib.bpf_map_delete_elem(self.map_fd(map_name), ctypes.create_string_buffer(key, len(key)))

    def consume(self) -> int:
        return int(self._lib.ring_buffer__consume(self._ring)) if self._ring is not None else 0

    def _record(self, _ctx: int, data: int, size: int) -> int:
        with contextlib.suppress(Exception):  # a failing consumer must not stop the ring
            self._on_record(ctypes.string_at(data, size))
        return 0

    def close(self) -> None:
        """Detach every program and free everything."""
        if self._ring is not None:
            self._lib.ring_buffer__free(self._ring)
            self._ring = None
        for link in self._links:
            self._lib.bpf_link__destroy(link)
        self._links.clear()
        if self._obj:
            self._lib.bpf_object__close(self._obj)
            self._obj = None
