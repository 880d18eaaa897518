"""Scanner benchmarks, each measured against a baseline taken in the same run.

1. Droplet scan time vs `tar xzf` of the same generated droplet (~200 MB, ~2,000 packages; goal <= 3x).
2. OSV import time and index size for ../shared/vulndb.
3. Matching throughput: findings per second for an inventory of known-vulnerable packages
   (PyPI, Go, RubyGems, npm and the Node.js runtime).
4. Hostile droplets: time to refuse a 10 GiB interleaved zero bomb and an archive past the entry
   limit, against `tar tzf` listing the same archive; a 70 MiB incompressible member against tar xzf.

Usage: .venv/bin/python bench/scan_droplet.py [--size-mb 200] [--packages 2000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from garrison.scan.model import Package  # noqa: E402
from garrison.scan.scanner import ScanOptions, scan  # noqa: E402
from garrison.scan.vulndb.index import VulnIndex  # noqa: E402
from garrison.scan.vulndb.load import LoadErrors, iter_advisories  # noqa: E402
from garrison.scan.vulndb.match import match_packages  # noqa: E402

VULNDB = (ROOT / ".." / "shared" / "vulndb").resolve()
WORDS = [
    "def",
    "return",
    "self",
    "import",
    "class",
    "for",
    "in",
    "if",
    "else",
    "while",
    "try",
    "except",
    "with",
    "as",
    "from",
    "lambda",
    "yield",
    "None",
    "True",
    "False",
    "value",
    "result",
    "request",
    "response",
    "config",
    "handler",
    "session",
    "data",
    "item",
    "key",
    "index",
    "buffer",
    "stream",
    "parse",
    "render",
]


def _text(rng: random.Random, size: int) -> bytes:
    out = io.StringIO()
    n = 0
    while n < size:
        line = "    " * rng.randint(0, 3) + " ".join(rng.choices(WORDS, k=rng.randint(3, 12))) + "\n"
        out.write(line)
        n += len(line)
    return out.getvalue().encode()


def generate(path: Path, size_mb: int, packages: int) -> tuple[int, int]:
    """Python, Node and Java packages with source text plus incompressible native blobs."""
    rng = random.Random(42)
    pool = [_text(rng, rng.randint(8_000, 60_000)) for _ in range(200)]
    target = size_mb << 20
    blob_every = 4
    blob_bytes = int(target * 0.6) // max(packages // blob_every, 1)  # ~60% incompressible native code
    site = "./deps/0/python/lib/python3.11/site-packages"
    files = 0
    with tarfile.open(path, "w:gz", compresslevel=6) as tf:

        def add(name: str, data: bytes) -> None:
            nonlocal files
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
            files += 1

        for j in range(60):  # the application's own code: scanned for secrets too
            add(f"./app/src/module{j}.py", pool[rng.randrange(len(pool))])
        for i in range(packages):
            kind = i % 3
            name, ver = f"pkg{i}", f"1.{i % 7}.{i % 11}"
            if kind == 0:
                add(
                    f"{site}/{name}-{ver}.dist-info/METADATA",
                    f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n\n".encode(),
                )
                base = f"{site}/{name}"
            elif kind == 1:
                add(
                    f"./app/node_modules/{name}/package.json",
                    json.dumps({"name": name, "version": ver}).encode(),
                )
                base = f"./app/node_modules/{name}/lib"
            else:
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                    zf.writestr(
                        f"META-INF/maven/org.bench/{name}/pom.properties",
                        f"groupId=org.bench\nartifactId={name}\nversion={ver}\n",
                    )
                    for j in range(rng.randint(2, 6)):
                        zf.writestr(f"org/bench/{name}/C{j}.class", pool[rng.randrange(len(pool))])
                add(f"./app/BOOT-INF/lib/{name}-{ver}.jar", buf.getvalue())
                base = f"./app/BOOT-INF/lib/{name}-native"
            for j in range(rng.randint(2, 6) if kind != 2 else 0):
                add(f"{base}/mod{j}.py", pool[rng.randrange(len(pool))])
            if i % blob_every == 0:
                add(f"{base}/_native{i}.so", b"\x7fELF" + os.urandom(blob_bytes))
    return files, path.stat().st_size


_T0 = [0.0]


def timed(fn):  # type: ignore[no-untyped-def]
    t = _T0[0] = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def hostile(work: Path) -> None:
    """Bomb refusals against native tar on the same files (load average printed by main)."""
    sys.path.insert(0, str(ROOT))
    from garrison.scan.source import Limits, ScanRefused
    from tests.scan.test_hostile import _interleaved_bomb

    bomb = _interleaved_bomb(work / "bomb.tgz", 10, 1 << 30, 4 << 20)
    try:
        _, t_bomb = timed(lambda: scan(bomb, ScanOptions()))
        print(f"10 GiB interleaved bomb: NOT refused in {t_bomb:.1f}s")
    except ScanRefused as exc:
        t_bomb = time.perf_counter() - _T0[0]
        print(
            f"10 GiB interleaved zero bomb ({bomb.stat().st_size / 1e6:.0f} MB): refused in {t_bomb:.2f}s ({exc})"
        )
    entries = work / "entries.tgz"
    n = 250_000
    with tarfile.open(entries, "w:gz", compresslevel=1) as tf:
        for i in range(n):
            info = tarfile.TarInfo(f"./app/f{i}")
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    _, t_list = timed(lambda: subprocess.run(["tar", "tzf", str(entries)], check=True, capture_output=True))
    limit = Limits().max_files
    try:
        _, t_ent = timed(lambda: scan(entries, ScanOptions()))
        print("entries: NOT refused")
    except ScanRefused:
        t_ent = time.perf_counter() - _T0[0]
        print(
            f"{n} entries: refused at entry {limit + 1} in {t_ent:.2f}s; tar tzf lists all {n} in {t_list:.2f}s "
            f"(ratio {t_ent / t_list:.1f}x)"
        )
    incomp = work / "incomp.tgz"
    with tarfile.open(incomp, "w:gz", compresslevel=1) as tf:
        data = os.urandom(70 << 20)
        info = tarfile.TarInfo("./app/model.bin")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    out = work / "inc"
    out.mkdir()
    _, t_tar = timed(lambda: subprocess.run(["tar", "xzf", str(incomp), "-C", str(out)], check=True))
    report, t_scan = timed(lambda: scan(incomp, ScanOptions()))
    print(
        f"70 MiB incompressible member: scanned ({report.summary.files} files) in {t_scan:.2f}s, tar xzf {t_tar:.2f}s"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--packages", type=int, default=2000)
    ap.add_argument("--keep", type=Path)
    ap.add_argument("--skip-hostile", action="store_true")
    args = ap.parse_args()
    print(
        f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, {os.cpu_count()} CPUs"
    )
    work = Path(tempfile.mkdtemp(prefix="garrison-bench-"))
    try:
        db = work / "db"
        if VULNDB.is_dir():
            errors = LoadErrors()
            with VulnIndex(db, create=True) as ix:
                res, t_import = timed(
                    lambda: ix.import_advisories(iter_advisories([VULNDB], errors), str(VULNDB))
                )
            size = (db / "osv.sqlite").stat().st_size
            src_size = sum(p.stat().st_size for p in VULNDB.rglob("*") if p.is_file())
            print(
                f"OSV import: {res.imported} advisories from {src_size / 1e6:.1f} MB in {t_import:.2f}s "
                f"({res.imported / t_import:.0f}/s); index {size / 1e6:.1f} MB"
            )
            for label, c in sorted(res.sources.items()):
                print(f"  {label:<26} read {c.read:>5} stored {c.stored:>5} skipped {dict(c.skipped)}")
        else:
            print(f"OSV import: skipped, {VULNDB} absent")
            db = None  # type: ignore[assignment]

        droplet = work / "droplet.tgz"
        (files, size), t_gen = timed(lambda: generate(droplet, args.size_mb, args.packages))
        print(
            f"droplet: {size / 1e6:.0f} MB compressed, {files} files, {args.packages} packages (generated in {t_gen:.0f}s)"
        )
        out = work / "x"
        out.mkdir()
        _, t_tar = timed(lambda: subprocess.run(["tar", "xzf", str(droplet), "-C", str(out)], check=True))
        shutil.rmtree(out)
        t_base = t_tar
        report, t_scan = timed(lambda: scan(droplet, ScanOptions(db_dir=db)))
        assert report.summary.packages >= args.packages, report.summary.packages
        print(
            f"tar xzf: {t_base:.2f}s   garrison scan: {t_scan:.2f}s   ratio {t_scan / t_base:.2f}x (goal <= 3x); "
            f"{report.summary.packages} packages, {report.summary.files} files found"
        )

        if db is not None:
            vulnerable = (
                [
                    Package(ecosystem="PyPI", name=n, version=v)
                    for n, v in [
                        ("django", "2.2.0"),
                        ("werkzeug", "2.2.2"),
                        ("jinja2", "2.10"),
                        ("pyyaml", "5.3"),
                        ("requests", "2.19.0"),
                        ("urllib3", "1.24.1"),
                        ("pillow", "8.0.0"),
                        ("flask", "0.12"),
                    ]
                ]
                + [
                    Package(ecosystem="Go", name=n, version=v)
                    for n, v in [
                        ("stdlib", "1.20.1"),
                        ("golang.org/x/net", "v0.7.0"),
                        ("golang.org/x/crypto", "v0.0.1"),
                    ]
                ]
                + [
                    Package(ecosystem="RubyGems", name=n, version=v)
                    for n, v in [
                        ("rails", "5.2.0"),
                        ("nokogiri", "1.10.0"),
                        ("rack", "2.0.1"),
                        ("actionpack", "5.2.0"),
                    ]
                ]
                + [
                    Package(ecosystem="npm", name=n, version=v)
                    for n, v in [
                        ("lodash", "4.17.4"),
                        ("jquery", "1.8.0"),
                        ("handlebars", "4.0.0"),
                        ("marked", "0.3.0"),
                    ]
                ]
                + [Package(ecosystem="Node.js", name="node", version="20.11.0")]
            )
            with VulnIndex(db) as ix:
                found, t_match = timed(lambda: match_packages(ix, vulnerable * 10))
            print(
                f"matching: {len(found)} findings for {len(vulnerable) * 10} packages in {t_match:.2f}s "
                f"= {len(found) / t_match:.0f} findings/s"
            )
        if args.keep:
            shutil.copy(droplet, args.keep)
        if not args.skip_hostile:
            hostile(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
