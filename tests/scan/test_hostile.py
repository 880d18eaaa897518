"""Hostile droplets: each is refused or skipped with a clear message, and nothing is written anywhere."""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
from pathlib import Path

import pytest

from garrison.scan.scanner import ScanOptions, ScanRefused, scan
from garrison.scan.source import Limits


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info, None


def _snapshot(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty cwd so any stray write would show up in the snapshot."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


def _scan_and_check(sandbox: Path, droplet: Path, **limits: int) -> list[str]:
    before = _snapshot(sandbox)
    report = scan(droplet, ScanOptions(limits=Limits(**limits)))
    assert _snapshot(sandbox) == before, "the scanner wrote files"
    return [f"{n.path}: {n.message}" for n in report.notices]


def test_path_traversal_and_absolute_names(sandbox: Path) -> None:
    d = _tar(
        sandbox / "d.tgz",
        [
            _file("../../evil.txt", b"x"),
            _file("/etc/cron.d/evil", b"x"),
            _file("app/../../escape", b"x"),
            _file("./app/ok.txt", b"fine"),
        ],
    )
    notes = _scan_and_check(sandbox, d)
    assert sum("path traversal" in n for n in notes) == 3
    assert not (sandbox.parent / "evil.txt").exists()


def test_symlinks_and_hardlinks_pointing_out(sandbox: Path) -> None:
    d = _tar(
        sandbox / "d.tgz",
        [
            _special("app/passwd", tarfile.SYMTYPE, "/etc/passwd"),
            _special("app/up", tarfile.SYMTYPE, "../../../root/.ssh/id_rsa"),
            _special("app/hard", tarfile.LNKTYPE, "/etc/shadow"),
            _special("app/inside", tarfile.SYMTYPE, "ok.txt"),
            _file("app/ok.txt", b"fine"),
        ],
    )
    notes = _scan_and_check(sandbox, d)
    assert sum("points outside" in n for n in notes) == 3
    assert not any("app/inside" in n for n in notes)


def test_device_files_skipped(sandbox: Path) -> None:
    d = _tar(
        sandbox / "d.tgz",
        [
            _special("app/mem", tarfile.CHRTYPE),
            _special("app/sda", tarfile.BLKTYPE),
            _special("app/p", tarfile.FIFOTYPE),
        ],
    )
    notes = _scan_and_check(sandbox, d)
    assert sum("device or FIFO" in n for n in notes) == 3


def test_file_count_bomb_refused(sandbox: Path) -> None:
    d = _tar(sandbox / "d.tgz", [_file(f"app/f{i}", b"") for i in range(60)])
    with pytest.raises(ScanRefused, match=r"more than 50 entries .* refused at entry 51;"):
        scan(d, ScanOptions(limits=Limits(max_files=50)))


def test_size_bomb_refused(sandbox: Path) -> None:
    d = _tar(sandbox / "d.tgz", [_file(f"app/zero{i}", b"\0" * (1 << 20)) for i in range(5)])
    with pytest.raises(ScanRefused, match="expands past 3145728 bytes"):
        scan(d, ScanOptions(limits=Limits(max_total_bytes=3 << 20)))


def test_compression_ratio_bomb_refused(sandbox: Path) -> None:
    d = _tar(sandbox / "d.tgz", [_file("app/zeros", b"\0" * (8 << 20))])
    assert d.stat().st_size < 64 << 10
    with pytest.raises(ScanRefused, match="ratio above 50:1"):
        scan(d, ScanOptions(limits=Limits(ratio_window=1 << 20, max_ratio=50)))


def test_gigantic_single_file_skipped(sandbox: Path) -> None:
    d = _tar(sandbox / "d.tgz", [_file("app/huge.bin", b"A" * (3 << 20)), _file("app/small", b"ok")])
    notes = _scan_and_check(sandbox, d, max_file_bytes=1 << 20)
    assert any("huge.bin" in n and "file limit" in n for n in notes)


def test_corrupt_and_truncated_archives(sandbox: Path) -> None:
    good = _tar(sandbox / "good.tgz", [_file(f"app/f{i}", os.urandom(4096)) for i in range(20)])
    raw = good.read_bytes()
    (sandbox / "trunc.tgz").write_bytes(raw[: len(raw) // 2])
    (sandbox / "garbage.tgz").write_bytes(b"\x1f\x8b" + os.urandom(2000))
    (sandbox / "notatar.gz").write_bytes(gzip.compress(b"hello, not a tar" * 100))
    for name in ("trunc.tgz", "garbage.tgz", "notatar.gz"):
        with pytest.raises(ScanRefused, match="corrupt"):
            scan(sandbox / name, ScanOptions())


def test_directory_links_and_fifos_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "app"
    root.mkdir()
    (tmp_path / "outside.pem").write_text("-----BEGIN RSA PRIVATE KEY-----\n" + "A" * 64 + "\n")
    (root / "link.pem").symlink_to(tmp_path / "outside.pem")
    (root / "dirlink").symlink_to(tmp_path)
    os.mkfifo(root / "fifo")
    report = scan(root, ScanOptions())
    assert report.secrets == []  # the key outside the tree was not read through the link
    notes = " | ".join(f"{n.path}: {n.message}" for n in report.notices)
    assert "link.pem: refused: symlink points outside" in notes and "fifo: skipped" in notes


def _gz_zeros(n: int) -> bytes:
    """n zero bytes as 1 MiB gzip members (a gzip stream may hold many members): ~1000:1."""
    return gzip.compress(bytes(1 << 20), 9) * (n >> 20)


def _interleaved_bomb(path: Path, zero_members: int, zero_bytes: int, random_bytes: int) -> Path:
    """A droplet alternating random members with members of zeros, written as concatenated gzip
    members so gigabytes of zeros cost a few MB and a second to build (what an attacker ships)."""
    with path.open("wb") as out:
        for i in range(zero_members):
            rnd = tarfile.TarInfo(f"app/random{i}.bin")
            rnd.size = random_bytes
            out.write(gzip.compress(rnd.tobuf(tarfile.GNU_FORMAT) + os.urandom(random_bytes), 1))
            zero = tarfile.TarInfo(f"app/zeros{i}.bin")
            zero.size = zero_bytes
            out.write(gzip.compress(zero.tobuf(tarfile.GNU_FORMAT), 1))
            out.write(_gz_zeros(zero_bytes))
        out.write(gzip.compress(bytes(1024), 1))  # end-of-archive blocks
    return path


def test_interleaved_zero_bomb_refused_within_the_first_window(sandbox: Path) -> None:
    """Random data keeps the overall ratio low; the first window of zeros is refused anyway,
    after a few hundred MB of 10 GiB, whatever the members declare."""
    bomb = _interleaved_bomb(sandbox / "bomb.tgz", 10, 1 << 30, 4 << 20)
    assert bomb.stat().st_size < 64 << 20  # 10 GiB of zeros inside
    with pytest.raises(ScanRefused, match=r"ratio above 200:1 after (\d+) bytes") as exc:
        scan(bomb, ScanOptions())
    after = int(re.search(r"after (\d+) bytes", str(exc.value))[1])  # type: ignore[index]
    assert after < 512 << 20


def test_incompressible_70mib_first_member_passes(sandbox: Path) -> None:
    """Declared sizes are not compared with compressed bytes read so far: real bytes are measured."""
    d = _tar(
        sandbox / "d.tgz", [_file("app/model.bin", os.urandom(70 << 20)), _file("app/main.py", b"print(1)\n")]
    )
    notes = _scan_and_check(sandbox, d)
    assert notes == []


def test_highly_compressible_real_text_passes(sandbox: Path) -> None:
    """Log-like text compresses ~20-50:1 in gzip, well inside the bound."""
    line = b"2024-05-01T12:00:00Z INFO request handled path=/api/v1/items status=200 ms=3\n"
    d = _tar(sandbox / "d.tgz", [_file("app/logs/app.log", line * (6 << 20 // len(line)) * 60)])
    assert _scan_and_check(sandbox, d) == []


def test_member_declaring_more_than_the_member_limit_refused(sandbox: Path) -> None:
    d = _tar(sandbox / "d.tgz", [_file("app/big", b"\0" * (2 << 20))])
    with pytest.raises(ScanRefused, match="member app/big declares 2097152 bytes"):
        scan(d, ScanOptions(limits=Limits(max_member_bytes=1 << 20)))


def test_time_limit(sandbox: Path) -> None:
    d = _tar(sandbox / "d.tgz", [_file("app/f", b"x")])
    with pytest.raises(ScanRefused, match="took longer than 0 s"):
        scan(d, ScanOptions(limits=Limits(max_seconds=0)))
