"""Go modules from the build information embedded in Go binaries (`go version -m` equivalent).

Go 1.18+ writes the version and module info inline after the 32-byte `\\xff Go buildinf:` header;
older binaries store pointers to them, which are resolved through the ELF program headers
(pyelftools). Mach-O/PE binaries are supported for the inline format only.
"""

from __future__ import annotations

import io
import struct

from elftools.elf.elffile import ELFFile

from garrison.scan.inventory.interface import Detector

MAGIC = b"\xff Go buildinf:"
_BIN_HEADS = (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"MZ")


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def read_buildinfo(data: bytes) -> tuple[str, str] | None:
    """Return (go version, modinfo text) or None when `data` holds no Go build info."""
    at = data.find(MAGIC)
    while at >= 0 and at % 16:
        at = data.find(MAGIC, at + 1)
    if at < 0 or at + 32 > len(data):
        return None
    psize, flags = data[at + 14], data[at + 15]
    if flags & 2:
        pos = at + 32
        n, pos = _uvarint(data, pos)
        version = data[pos : pos + n].decode("utf-8", "replace")
        pos += n
        n, pos = _uvarint(data, pos)
        mod = data[pos : pos + n].decode("utf-8", "replace")
    else:
        got = _legacy(data, at, psize, bool(flags & 1))
        if got is None:
            return None
        version, mod = got
    if len(mod) >= 33 and mod[-17] == "\n":
        mod = mod[16:-16]
    return version, mod


def _legacy(data: bytes, at: int, psize: int, big: bool) -> tuple[str, str] | None:
    """Pre-1.18 layout: two pointers to Go string headers; map virtual addresses via ELF segments."""
    if not data.startswith(b"\x7fELF") or psize not in (4, 8):
        return None
    try:
        elf = ELFFile(io.BytesIO(data))
        segs = [
            (s["p_vaddr"], s["p_offset"], s["p_filesz"])
            for s in elf.iter_segments()
            if s["p_type"] == "PT_LOAD"
        ]
    except Exception:
        return None
    end = ">" if big else "<"
    pfmt = end + ("Q" if psize == 8 else "I")

    def at_addr(addr: int, size: int) -> bytes | None:
        for vaddr, off, filesz in segs:
            if vaddr <= addr and addr + size <= vaddr + filesz:
                return data[off + addr - vaddr : off + addr - vaddr + size]
        return None

    def gostring(ptr: int) -> str | None:
        hdr = at_addr(ptr, 2 * psize)
        if hdr is None:
            return None
        sptr, slen = struct.unpack(end + ("QQ" if psize == 8 else "II"), hdr)
        raw = at_addr(sptr, slen) if slen < (16 << 20) else None
        return raw.decode("utf-8", "replace") if raw is not None else None

    vptr = struct.unpack_from(pfmt, data, at + 16)[0]
    mptr = struct.unpack_from(pfmt, data, at + 16 + psize)[0]
    version, mod = gostring(vptr), gostring(mptr)
    if version is None:
        return None
    return version, mod or ""


class GoDetector(Detector):
    name = "go"

    def wants(self, path: str, head: bytes) -> bool:
        return head.startswith(_BIN_HEADS)

    def feed(self, path: str, data: bytes) -> None:
        try:
            info = read_buildinfo(data)
        except (ValueError, struct.error) as exc:
            self.note(path, f"damaged Go build info: {exc}")
            return
        if info is None:
            return
        version, mod = info
        if version.startswith("go"):
            std = version[2:].split(" ", 1)[0].split("-", 1)[0]
            self.add("Go", "stdlib", std, path, "buildinfo", f"pkg:golang/stdlib@{std}")
        replaced: dict[str, tuple[str, str]] = {}
        last_dep: str | None = None
        deps: list[tuple[str, str, str]] = []
        for line in mod.splitlines():
            f = line.split("\t")
            if f[0] in ("mod", "dep") and len(f) >= 3:
                deps.append((f[0], f[1], f[2]))
                last_dep = f[1]
            elif f[0] == "=>" and len(f) >= 3 and last_dep and f[2]:
                replaced[last_dep] = (f[1], f[2])
        for kind, name, ver in deps:
            if name in replaced:
                name, ver = replaced[name]
            if ver == "(devel)":
                continue
            self.add("Go", name, ver, path, f"buildinfo:{kind}", f"pkg:golang/{name}@{ver}")
