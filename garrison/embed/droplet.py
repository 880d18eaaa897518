"""Embedding the defender into a CF droplet (tar.gz with app/, deps/, profile.d/, staging_info.yml).

The droplet is streamed member by member through the hostile-archive checks into a new archive next
to the output, which then replaces it atomically: a refused or interrupted run leaves the input and
any existing output untouched. The defender lands in `app/.garrison/` (the app's working directory
at run time) and `staging_info.yml`'s `start_command` is wrapped; `undo` reverses both exactly.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from garrison.embed import command as cmd
from garrison.embed.safetar import Limits, UnsafeArchive, iter_checked, open_archive

DEFENDER_DIR = "app/.garrison"


class DropletError(Exception):
    """Not a droplet, or nothing to do; the message says why and nothing was written."""


@dataclass(frozen=True)
class EmbedResult:
    original_command: str
    start_command: str


@dataclass(frozen=True)
class StagingInfo:
    """staging_info.yml parsed; CF writes it as JSON, which is also YAML, so keep whichever it was."""

    data: dict[str, Any]
    was_json: bool
    compact: bool = False
    newline: bool = False

    @classmethod
    def parse(cls, raw: bytes) -> StagingInfo:
        text = raw.decode("utf-8", errors="strict")
        try:
            data = json.loads(text)
            was_json = True
            compact = '":"' in text or '","' in text
        except json.JSONDecodeError:
            try:
                data = YAML(typ="safe").load(text)
            except YAMLError as e:
                raise DropletError(f"staging_info.yml is not valid YAML: {e}") from e
            was_json = compact = False
        if not isinstance(data, dict):
            raise DropletError("staging_info.yml is not a mapping")
        return cls(dict(data), was_json, compact, text.endswith("\n"))

    @property
    def start_command(self) -> str:
        return str(self.data.get("start_command") or "")

    def with_start_command(self, command: str) -> bytes:
        data = {**self.data, "start_command": command}
        if self.was_json:
            sep = (",", ":") if self.compact else (", ", ": ")
            return (json.dumps(data, separators=sep) + ("\n" if self.newline else "")).encode()
        buf = io.StringIO()
        y = YAML(typ="safe")
        y.default_flow_style = False
        y.width = 1 << 20
        y.dump(data, buf)
        return buf.getvalue().encode()


def _in_defender_dir(name: str) -> bool:
    return name == DEFENDER_DIR or name.startswith(DEFENDER_DIR + "/")


def _defender_files(source: Path, limits: Limits) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """(member relative to the defender dir, data) from a defender tarball or a built dist directory."""
    if source.is_dir():
        for root, dirs, files in os.walk(source):
            dirs.sort()
            for n in sorted(dirs) + sorted(files):
                p = Path(root, n)
                rel = p.relative_to(source).as_posix()
                ti = tarfile.TarInfo(rel)
                st = p.lstat()
                ti.mode, ti.mtime = st.st_mode & 0o7777, int(st.st_mtime)
                if p.is_symlink():
                    ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(p)
                    yield ti, None
                elif p.is_dir():
                    ti.type = tarfile.DIRTYPE
                    yield ti, None
                elif p.is_file():
                    data = p.read_bytes()
                    ti.size = len(data)
                    yield ti, data
        return
    with open_archive(source) as tf:
        for m, name, stream in iter_checked(tf, limits):
            if not name:
                continue
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime, ti.linkname = m.type, m.mode & 0o7777, m.mtime, m.linkname
            content = stream.read() if stream is not None else None
            ti.size = len(content) if content is not None else 0
            yield ti, content


def check_defender_source(source: Path) -> None:
    """Fail early, with a useful message, if `source` does not hold a `defender` executable."""
    if source.is_dir():
        if not (source / "defender").is_file():
            raise DropletError(f"{source}: no 'defender' executable in this directory")
        return
    if not source.is_file():
        raise DropletError(f"defender tarball not found: {source} (build it with scripts/build-defender)")
    with open_archive(source) as tf:
        for _m, name, _s in iter_checked(tf):
            if name == "defender":
                return
    raise DropletError(f"{source}: the tarball has no top-level 'defender' executable")


def _rewrite(
    src: Path,
    dst: Path,
    limits: Limits,
    on_staging: Any,
    extra: Iterator[tuple[tarfile.TarInfo, bytes | None]] | None = None,
) -> None:
    """Copy src to dst, dropping app/.garrison, transforming staging_info, appending `extra` members."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp makes the file 0600; the result keeps the mode of the file it replaces (or of the input)
    mode = (dst if dst.exists() else src).stat().st_mode & 0o7777
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
    os.fchmod(fd, mode)
    os.close(fd)
    tmp = Path(tmp_name)
    seen_staging = seen_app = False
    try:
        with open_archive(src) as tin, tarfile.open(tmp, "w:gz", compresslevel=6) as tout:
            dot: str | None = None
            owner: tarfile.TarInfo | None = None
            for m, name, stream in iter_checked(tin, limits):
                if name and dot is None:
                    dot = "./" if m.name.startswith("./") else ""
                if name == "app" or name.startswith("app/"):
                    seen_app = True
                    owner = owner or m
                if _in_defender_dir(name):
                    continue
                if name == "staging_info.yml" and m.isreg() and stream is not None:
                    seen_staging = True
                    data = on_staging(stream.read())
                    m = _copy_info(m)
                    m.size = len(data)
                    tout.addfile(m, io.BytesIO(data))
                    continue
                tout.addfile(m, stream)
            if not seen_staging:
                raise DropletError(f"{src}: not a droplet (no staging_info.yml)")
            if not seen_app:
                raise DropletError(f"{src}: not a droplet (no app/ directory)")
            for ti, data in extra or ():
                ti.name = (dot or "") + posixpath.join(DEFENDER_DIR, ti.name).rstrip("/")
                if owner is not None:
                    ti.uid, ti.gid, ti.uname, ti.gname = owner.uid, owner.gid, owner.uname, owner.gname
                tout.addfile(ti, io.BytesIO(data) if data is not None else None)
        tmp.replace(dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_info(m: tarfile.TarInfo) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(m.name)
    ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = m.mode, m.mtime, m.uid, m.gid, m.uname, m.gname
    return ti


def _dir_entry() -> tarfile.TarInfo:
    ti = tarfile.TarInfo("")
    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
    return ti


def embed_droplet(
    src: Path,
    dst: Path,
    defender: Path,
    *,
    command: str | None = None,
    defender_path: str = cmd.DEFAULT_DROPLET_PATH,
    limits: Limits | None = None,
) -> EmbedResult:
    """Write `defender` into the droplet and wrap its start command (re-embedding replaces it)."""
    limits = limits or Limits()
    check_defender_source(defender)
    result: dict[str, str] = {}

    def staging(raw: bytes) -> bytes:
        info = StagingInfo.parse(raw)
        original = command or info.start_command
        if cmd.is_wrapped(original):
            original = cmd.unwrap(original)
        if not original:
            raise DropletError("the droplet has no start_command; give one with --command")
        result["original"], result["wrapped"] = original, cmd.wrap(original, defender_path)
        return info.with_start_command(result["wrapped"])

    def files() -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
        yield _dir_entry(), None
        yield from _defender_files(defender, limits)

    try:
        _rewrite(src, dst, limits, staging, files())
    except UnsafeArchive as e:
        raise DropletError(f"refused: {e}") from e
    return EmbedResult(result["original"], result["wrapped"])


def undo_droplet(src: Path, dst: Path, *, limits: Limits | None = None) -> str:
    """Remove the defender and restore the original start command; returns that command."""
    restored: dict[str, str] = {}

    def staging(raw: bytes) -> bytes:
        info = StagingInfo.parse(raw)
        if not cmd.is_wrapped(info.start_command):
            raise DropletError("the droplet has no defender embedded: nothing to undo")
        restored["command"] = cmd.unwrap(info.start_command)
        return info.with_start_command(restored["command"])

    try:
        _rewrite(src, dst, limits or Limits(), staging)
    except UnsafeArchive as e:
        raise DropletError(f"refused: {e}") from e
    return restored["command"]


def read_staging_info(src: Path, limits: Limits | None = None) -> StagingInfo:
    """staging_info.yml of a droplet (checked like any other member)."""
    try:
        with open_archive(src) as tf:
            for m, name, stream in iter_checked(tf, limits):
                if name == "staging_info.yml" and m.isreg() and stream is not None:
                    return StagingInfo.parse(stream.read())
    except UnsafeArchive as e:
        raise DropletError(f"refused: {e}") from e
    raise DropletError(f"{src}: not a droplet (no staging_info.yml)")
