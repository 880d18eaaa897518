"""Which defender goes into a droplet, what it needs at run time, and building the standalone one.

Two kinds exist. The **standalone** defender (scripts/build-defender: PyInstaller onedir, bundled
interpreter) runs in a CF droplet with no Python. The **launcher** (a few lines of shell the console
serves when it has no standalone build) needs the `garrison` package importable in the droplet,
which a droplet does not have unless the app ships it. `garrison embed` therefore never embeds the
launcher silently: it builds the standalone defender when it can (cached by scripts/build-defender,
with a progress bar) and says loudly which kind it embedded and what that needs.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from garrison.embed.safetar import iter_checked, open_archive

LAUNCHER_MARK = b"Garrison app-embedded defender launcher"
TARBALL_NAME = "garrison_defender_app_embedded.tar.gz"
_GLIBC = re.compile(rb"GLIBC_2\.(\d+)")
_ARCH = {62: "x86_64", 183: "aarch64", 3: "i386", 40: "arm"}

Kind = Literal["standalone", "launcher", "custom"]


class BuildError(Exception):
    """The standalone defender could not be built; the message says why and what to do."""


@dataclass
class DefenderInfo:
    kind: Kind
    source: Path
    size: int = 0
    arch: str = ""
    glibc: str = ""
    files: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        mb = f"{self.size / 1e6:.0f} MB" if self.size >= 1e6 else f"{self.size} bytes"
        if self.kind == "standalone":
            return f"standalone defender (bundled Python interpreter, {self.files} files, {mb} unpacked)"
        if self.kind == "launcher":
            return f"LAUNCHER defender (a {mb} shell script that starts an installed Garrison)"
        return f"custom defender ({self.files} files, {mb})"

    def needs(self) -> str:
        if self.kind == "standalone":
            glibc = f"glibc >= {self.glibc}" if self.glibc else "glibc"
            return f"Linux {self.arch or '(same architecture as the build)'} with {glibc} (cflinuxfs4); no Python"
        if self.kind == "launcher":
            return (
                "the `garrison` Python package importable by python3 inside the droplet (not there unless "
                "the app ships it): on `cf push` the app exits 127 without it. `garrison run-droplet` on a "
                "machine with Garrison installed runs it with that installation."
            )
        return "whatever this defender needs: it is neither Garrison's standalone build nor its launcher"


def inspect_defender(source: Path) -> DefenderInfo:
    """Classify a defender tarball or directory by its `defender` entry (ELF + support dir, or the launcher)."""
    info = DefenderInfo("custom", source)
    head = b""
    has_lib = False
    glibc = 0

    def scan(name: str, data: bytes) -> None:
        nonlocal head, glibc, has_lib
        info.files += 1
        info.size += len(data)
        if name == "defender":
            head = data[:4096]
        if name.startswith("defender_lib/"):
            has_lib = True
        if data[:4] == b"\x7fELF":
            glibc = max([glibc, *(int(m) for m in _GLIBC.findall(data))])
            if name == "defender" and len(data) > 20:
                info.arch = _ARCH.get(int.from_bytes(data[18:20], "little"), "")

    if source.is_dir():
        for root, _dirs, files in os.walk(source):
            for n in files:
                p = Path(root, n)
                if p.is_file() and not p.is_symlink():
                    scan(p.relative_to(source).as_posix(), p.read_bytes())
    else:
        with open_archive(source) as tf:
            for m, name, stream in iter_checked(tf):
                if m.isreg() and stream is not None:
                    scan(name, stream.read())
    if LAUNCHER_MARK in head:
        info.kind = "launcher"
    elif head[:4] == b"\x7fELF" and has_lib:
        info.kind = "standalone"
        info.glibc = f"2.{glibc}" if glibc else ""
    return info


def checkout_root() -> Path | None:
    """The source checkout Garrison runs from, if it has the build script and spec (an editable install)."""
    import garrison

    root = Path(garrison.__file__).resolve().parents[1]
    ok = (root / "scripts" / "build-defender").is_file() and (root / "packaging" / "defender.spec").is_file()
    return root if ok else None


# PyInstaller's INFO lines that mark the phases of a build, with the share of the build done by then.
_PHASES: list[tuple[str, float, str]] = [
    ("Analyzing ", 5, "analysing imports"),
    ("Processing module hooks", 45, "module hooks"),
    ("Looking for ctypes DLLs", 55, "ctypes libraries"),
    ("Analyzing run-time hooks", 60, "run-time hooks"),
    ("Looking for dynamic libraries", 65, "shared libraries"),
    ("Building PYZ", 75, "Python archive"),
    ("Building PKG", 80, "package"),
    ("Building EXE", 84, "executable"),
    ("Building COLLECT", 88, "collecting files"),
    ("Build complete", 94, "writing the tarball"),
]


def build_standalone(root: Path, *, quiet: bool = False) -> Path:
    """Run scripts/build-defender (a no-op when the frozen sources did not change) with a progress bar;
    return the tarball. The build is cached in `root/dist/` and safe to run concurrently."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    tarball = root / "dist" / TARBALL_NAME
    err = Console(stderr=True, quiet=quiet)
    env = {**os.environ, "GARRISON_BUILD_LOG_LEVEL": "INFO"}
    cmd = ["bash", str(root / "scripts" / "build-defender")]
    lines: list[str] = []
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]standalone defender[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        task = progress.add_task("checking the cache in dist/", total=100)
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        assert proc.stdout is not None
        done = 0.0
        cached = False
        for line in proc.stdout:
            lines.append(line.rstrip())
            if "up to date" in line:
                cached = True
                continue
            if "building with PyInstaller" in line:
                progress.update(task, completed=2, description="building with PyInstaller (1-3 min, once)")
            if "pip" in line and "install" in line:
                progress.update(task, description="installing PyInstaller (the `build` extra)")
            for marker, share, label in _PHASES:
                if marker in line and share > done:
                    done = share
                    progress.update(task, completed=share, description=label)
            if "standard module hook" in line and done < 45:  # many of these: creep forward
                done = min(44.0, done + 0.4)
                progress.update(task, completed=done, description="module hooks")
        rc = proc.wait()
        if rc == 0:
            state = "up to date (cached)" if cached else "built"
            progress.update(task, completed=100, description=f"{state}: {tarball.relative_to(root)}")
    if rc != 0 or not tarball.is_file():
        tail = "\n".join(lines[-15:])
        raise BuildError(f"scripts/build-defender failed (exit {rc}):\n{tail}")
    return tarball
