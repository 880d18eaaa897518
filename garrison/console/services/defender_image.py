"""The app-embedded defender download: a prebuilt standalone binary if one is present, else a launcher."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

IMAGE_NAME = "garrison_defender_app_embedded.tar.gz"

LAUNCHER = """#!/bin/sh
# Garrison app-embedded defender launcher: runs the defender from an installed `garrison` package.
# (The console ships a standalone binary instead when one was built: see docs/console.md.)
# GARRISON_DEFENDER_PYTHON (set by `garrison run-droplet` on a machine with Garrison installed) names
# an interpreter that has it.
set -e
if [ -n "${GARRISON_DEFENDER_PYTHON:-}" ] && "$GARRISON_DEFENDER_PYTHON" -c 'import garrison' 2>/dev/null; then
  exec "$GARRISON_DEFENDER_PYTHON" -m garrison defender "$@"
fi
if command -v garrison >/dev/null 2>&1; then exec garrison defender "$@"; fi
for py in python3 python; do
  if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import garrison' 2>/dev/null; then
    exec "$py" -m garrison defender "$@"
  fi
done
echo "defender: the garrison package is not installed in this droplet; use a console with a" >&2
echo "standalone defender build (GARRISON_DEFENDER_DIST) or add garrison to the app's dependencies" >&2
exit 127
"""


def find_dist(data_dir: Path) -> Path | None:
    """The prebuilt defender: $GARRISON_DEFENDER_DIST, else <data-dir>/defender-dist.

    Either may be the built tarball, a folder holding it (scripts/build-defender's dist/), a PyInstaller
    onedir folder (`defender` + `defender_lib/`), or a single `defender` executable.
    """
    for cand in (os.environ.get("GARRISON_DEFENDER_DIST"), str(data_dir / "defender-dist")):
        if not cand:
            continue
        p = Path(cand)
        if p.is_dir():
            if (p / IMAGE_NAME).is_file():
                return p / IMAGE_NAME
            if (p / "defender").is_file():
                return p
            continue
        if p.is_file():
            return p
    return None


def _add_tree(tar: tarfile.TarFile, root: Path) -> None:
    """Every entry under `root` at the tarball's top level, owned by root (the droplet's user differs)."""
    for path in sorted(root.rglob("*")):
        info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if info.isfile():
            with path.open("rb") as fh:
                tar.addfile(info, fh)
        else:
            tar.addfile(info)


def build_image(data_dir: Path) -> bytes:
    dist = find_dist(data_dir)
    if dist is not None and dist.is_file() and dist.name == IMAGE_NAME:
        return dist.read_bytes()  # already the artefact scripts/build-defender made
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        if dist is not None and dist.is_dir():
            _add_tree(tar, dist)
        elif dist is not None:
            info = tar.gettarinfo(str(dist), arcname="defender")
            info.mode = 0o755
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with dist.open("rb") as fh:
                tar.addfile(info, fh)
        else:
            data = LAUNCHER.encode()
            info = tarfile.TarInfo("defender")
            info.size, info.mode, info.mtime = len(data), 0o755, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
