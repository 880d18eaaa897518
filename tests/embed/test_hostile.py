"""Hostile droplets: refused with a message naming the member; nothing written anywhere."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from garrison.cli.main import app
from garrison.embed.safetar import Limits, UnsafeArchive, iter_checked, safe_extract
from tests.embed.droplets import hostile

SYM = tarfile.SYMTYPE
Member = tuple[str, dict[str, object], bytes | None]
CASES: dict[str, list[Member]] = {
    "traversal": [("../../escape.txt", {}, b"x")],
    "traversal-inside": [("./app/../../escape.txt", {}, b"x")],
    "absolute": [("/tmp/garrison-abs.txt", {}, b"x")],
    "symlink-out": [("./app/etc", {"type": SYM, "linkname": "../../../etc"}, None)],
    "symlink-absolute": [("./app/passwd", {"type": SYM, "linkname": "/etc/passwd"}, None)],
    "write-through-symlink": [
        ("./app/up", {"type": SYM, "linkname": ".."}, None),
        ("./app/up/up2", {"type": SYM, "linkname": ".."}, None),
    ],
    "symlink-chain": [
        ("./d/", {}, None),
        ("./d/l", {"type": SYM, "linkname": ".."}, None),
        ("./x", {"type": SYM, "linkname": "d/l/.."}, None),
    ],
    "hardlink-out": [("./app/shadow", {"type": tarfile.LNKTYPE, "linkname": "../etc/shadow"}, None)],
    "device": [("./app/null", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, None)],
    "fifo": [("./app/fifo", {"type": tarfile.FIFOTYPE}, None)],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_checker_refuses(tmp_path: Path, case: str) -> None:
    path = hostile(tmp_path / "h.tgz", *CASES[case])
    with tarfile.open(path) as tf, pytest.raises(UnsafeArchive):
        for _ in iter_checked(tf):
            pass


@pytest.mark.parametrize("case", sorted(CASES))
def test_embed_and_run_refuse_and_write_nothing(tmp_path: Path, case: str, fake_defender: Path) -> None:
    path = hostile(tmp_path / "h.tgz", *CASES[case])
    before = path.read_bytes()
    r = CliRunner().invoke(app, ["embed", str(path), "--defender", str(fake_defender)])
    assert r.exit_code == 2, r.output
    assert "refused" in r.output
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake-defender", "h.tgz"]  # no temp file left

    root = tmp_path / "root" / "home"
    r = CliRunner().invoke(app, ["run-droplet", str(path), "--dir", str(root), "--command", "true"])
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "root" / "escape.txt").exists()
    assert not Path("/tmp/garrison-abs.txt").exists()


def test_legit_internal_symlinks_pass(tmp_path: Path) -> None:
    path = hostile(
        tmp_path / "ok.tgz",
        ("./deps/", {}, None),
        ("./deps/0/", {}, None),
        ("./deps/0/python3.11", {}, b"#!/bin/sh\n"),
        ("./deps/0/python3", {"type": SYM, "linkname": "python3.11"}, None),
        ("./app/deps", {"type": SYM, "linkname": "../deps"}, None),
        ("./app/hard", {"type": tarfile.LNKTYPE, "linkname": "./app/app.py"}, None),
    )
    dest = tmp_path / "out"
    safe_extract(path, dest)
    assert (dest / "app" / "deps" / "0" / "python3").read_bytes() == b"#!/bin/sh\n"


def test_gzip_bomb_stops_early(tmp_path: Path) -> None:
    """100 MiB of zeros compress to ~100 KiB; a 10 MiB limit refuses it while streaming."""
    raw = tmp_path / "bomb.tar"
    with tarfile.open(raw, "w") as tf:
        ti = tarfile.TarInfo("./app/zeros")
        ti.size = 100 * 1024 * 1024
        with open("/dev/zero", "rb") as zero:
            tf.addfile(ti, zero)
    bomb = tmp_path / "bomb.tgz"
    with raw.open("rb") as f, gzip.open(bomb, "wb", compresslevel=9) as g:
        while chunk := f.read(1 << 20):
            g.write(chunk)
    raw.unlink()
    assert bomb.stat().st_size < 1024 * 1024
    with pytest.raises(UnsafeArchive, match="archive bomb"):
        safe_extract(bomb, tmp_path / "out", Limits(max_total_bytes=10 * 1024 * 1024))
    assert not (tmp_path / "out" / "app" / "zeros").exists()


def test_member_count_limit(tmp_path: Path) -> None:
    path = hostile(tmp_path / "many.tgz", *[(f"./app/f{i}", {}, b"") for i in range(50)])
    with pytest.raises(UnsafeArchive, match="more than 20 members"):
        safe_extract(path, tmp_path / "out", Limits(max_members=20))


def test_truncated_archive(tmp_path: Path) -> None:
    path = hostile(tmp_path / "t.tgz", ("./app/big", {}, bytes(range(256)) * 4000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsafeArchive, match=r"corrupt|not a readable"):
        safe_extract(path, tmp_path / "out")
