"""One identity for a droplet from staging to blobstore to run time.

Cloud Foundry stages an app in `/tmp/app` and `/tmp/deps/<n>` and then tars both into the droplet as
`app/` and `deps/`, which Diego unpacks into `/home/vcap` before the start command runs. The droplet's
**content digest** — SHA-256 over the sorted (path, SHA-256 of content) pairs of every regular file under
`app/` and `deps/` — is therefore computable in all three places with the same result:

- by the buildpack at the end of staging (`bin/finalize`: the tree *is* the droplet-to-be),
- by the console's blobstore rescanner from the droplet tarball the cloud controller stored,
- by the defender from `/home/vcap` before it starts the app.

The buildpack also writes `deps/<idx>/garrison-identity.json` into the droplet: the digest it computed
and the CF app (guid, space, org) it staged for. That record travels with the droplet, so a rescan maps
*blob → app guid → droplet digest* without asking the cloud controller. Garrison's own files in that
directory (which carry the digest) are left out of the digest. Symlinks, empty directories and file
modes are not part of it: it identifies content, which is what vulnerabilities and malware live in.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import stat
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from garrison.scan.model import AppRef
from garrison.scan.source import (
    Limits,
    ScanRefused,
    _decompressor,
    _HashingReader,
    _Meter,
    _safe_name,
)

IDENTITY_FILE = "garrison-identity.json"
# files Garrison writes into its own deps/<idx>/ (they carry the digest, so cannot be part of it)
OWN_FILES = frozenset({IDENTITY_FILE, "garrison-scan.json", "config.yml", "profile.d/garrison.sh"})
_PREFIX = b"garrison-droplet-content-v1\n"
_CHUNK = 1 << 20
_MAX_RECORD = 64 << 10


class DropletIdentity(BaseModel):
    """`deps/<idx>/garrison-identity.json`: what the buildpack staged, for which app."""

    model_config = ConfigDict(extra="ignore")

    schema_version: Literal[1] = 1
    digest: str = Field(min_length=1, max_length=128)
    app: AppRef = Field(default_factory=AppRef)
    deps_idx: str = Field(default="", max_length=16)
    phase: Literal["supply", "finalize"] = "finalize"
    staged_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    scanner_version: str = ""


@dataclass
class ContentDigest:
    """Collects (droplet path, sha256) pairs in any order; the digest sorts them."""

    files: dict[str, str] = field(default_factory=dict)
    records: dict[str, bytes] = field(default_factory=dict)  # deps/<n>/garrison-identity.json bodies

    def add(self, path: str, sha256_hex: str) -> None:
        self.files[path] = sha256_hex

    def own_dirs(self) -> set[str]:
        """deps/<n> directories holding a Garrison identity record whose declared index matches."""
        out: set[str] = set()
        for path, body in self.records.items():
            idx = path.split("/")[1]
            try:
                rec = DropletIdentity.model_validate_json(body)
            except ValidationError:
                continue
            if rec.deps_idx in ("", idx):
                out.add(f"deps/{idx}")
        return out

    def digest(self, own: set[str] | None = None) -> str:
        own = self.own_dirs() if own is None else own
        skip = {f"{d}/{name}" for d in own for name in OWN_FILES}
        h = hashlib.sha256(_PREFIX)
        for path in sorted(self.files):
            if path not in skip:
                h.update(f"{path}\0{self.files[path]}\n".encode())
        return "sha256:" + h.hexdigest()

    def identity(self) -> DropletIdentity | None:
        """The (first valid) identity record found in the droplet, if any."""
        for path in sorted(self.records):
            try:
                rec = DropletIdentity.model_validate_json(self.records[path])
            except ValidationError:
                continue
            if rec.deps_idx in ("", path.split("/")[1]):
                return rec
        return None


def _in_scope(path: str) -> bool:
    return path.startswith("app/") or (path.startswith("deps/") and path.count("/") >= 2)


def _is_record(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 3 and parts[0] == "deps" and parts[2] == IDENTITY_FILE


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def collect_tree(parts: dict[str, Path], limits: Limits | None = None) -> ContentDigest:
    """Hash the regular files of each `{droplet prefix: directory}` (e.g. {"app": build_dir, "deps":
    deps_dir}); symlinks are not followed, unreadable files raise ScanRefused (the digest would lie)."""
    limits = limits or Limits()
    cd = ContentDigest()
    for prefix, root in parts.items():
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath) / name
                try:
                    st = p.lstat()
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                rel = f"{prefix}/{p.relative_to(root).as_posix()}"
                if len(cd.files) >= limits.max_files:
                    raise ScanRefused(f"{root}: more than {limits.max_files} files, refused")
                try:
                    cd.add(rel, _hash_file(p))
                    if _is_record(rel) and st.st_size <= _MAX_RECORD:
                        cd.records[rel] = p.read_bytes()
                except OSError as exc:
                    raise ScanRefused(
                        f"{p}: cannot read ({exc.strerror}); droplet digest incomplete"
                    ) from exc
    return cd


def collect_droplet_dir(root: Path) -> ContentDigest:
    """A droplet unpacked the way Diego does it (`root/app`, `root/deps`), e.g. /home/vcap."""
    return collect_tree({"app": root / "app", "deps": root / "deps"})


def is_droplet_dir(root: Path) -> bool:
    return (root / "app").is_dir() and (root / "deps").is_dir()


def collect_tar(path: Path, limits: Limits | None = None) -> ContentDigest:
    """Stream a droplet tarball (never extracted) and hash its `app/` and `deps/` files; the same
    limits as the scanner refuse tar and decompression bombs. Hard links take their target's hash."""
    limits = limits or Limits()
    cd = ContentDigest()
    total = 0
    with path.open("rb") as raw:
        reader = _HashingReader(raw)
        try:
            stream = _Meter(
                _decompressor(reader, raw), reader, limits, path, time.monotonic() + limits.max_seconds
            )
            with tarfile.open(fileobj=cast(Any, stream), mode="r|") as tf:
                by_member: dict[str, str] = {}
                for n, m in enumerate(tf):
                    if n >= limits.max_files:
                        raise ScanRefused(
                            f"{path}: more than {limits.max_files} entries (tar bomb?), refused"
                        )
                    name = _safe_name(m.name)
                    if name is None:
                        continue
                    if m.islnk():
                        target = _safe_name(m.linkname)
                        if _in_scope(name) and target is not None and target in by_member:
                            cd.add(name, by_member[target])
                        continue
                    if not m.isreg():
                        continue
                    total += m.size
                    if total > limits.max_total_bytes:
                        raise ScanRefused(f"{path}: more than {limits.max_total_bytes} bytes uncompressed")
                    # bytes really decompressed, the ratio per window and time: checked by _Meter
                    f = tf.extractfile(m)
                    if f is None:
                        continue
                    h = hashlib.sha256()
                    keep = _is_record(name) and m.size <= _MAX_RECORD
                    body = b""
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                        if keep:
                            body += chunk
                    by_member[name] = h.hexdigest()  # every member: a hard link may point anywhere
                    if _in_scope(name):
                        cd.add(name, by_member[name])
                    if keep:
                        cd.records[name] = body
        except (tarfile.TarError, zlib.error, EOFError, OSError, lzma.LZMAError) as exc:
            raise ScanRefused(f"{path}: corrupt archive ({exc.__class__.__name__}: {exc})") from exc
    return cd


def write_identity(own_dir: Path, ident: DropletIdentity) -> None:
    """Write the identity record and the profile.d script the defender's gate reads at start."""
    own_dir.mkdir(parents=True, exist_ok=True)
    (own_dir / IDENTITY_FILE).write_text(ident.model_dump_json(indent=1))
    prof = own_dir / "profile.d"
    prof.mkdir(exist_ok=True)
    (prof / "garrison.sh").write_text(
        f"export GARRISON_DROPLET_DIGEST={ident.digest}\nexport GARRISON_DROPLET_IDX={ident.deps_idx}\n"
    )


def read_identity(root: Path) -> DropletIdentity | None:
    """The identity record of an unpacked droplet (`root/deps/*/garrison-identity.json`)."""
    deps = root / "deps"
    if not deps.is_dir():
        return None
    for d in sorted(deps.iterdir()):
        f = d / IDENTITY_FILE
        try:
            if f.is_file() and f.stat().st_size <= _MAX_RECORD:
                rec = DropletIdentity.model_validate_json(f.read_bytes())
                if rec.deps_idx in ("", d.name):
                    return rec
        except (OSError, ValidationError, json.JSONDecodeError):
            continue
    return None
