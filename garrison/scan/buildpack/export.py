"""`garrison buildpack export`: write a ready-to-upload buildpack folder (and optionally a zip)."""

from __future__ import annotations

import json
import shutil
import stat
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

from garrison import __version__
from garrison.scan.assurance import AssurancePolicy
from garrison.scan.buildpack.stage import CONFIG

SCRIPTS = ("detect", "supply", "finalize", "release", "_find_garrison")


def export(
    dest: Path,
    *,
    console_url: str | None = None,
    ca_cert: Path | None = None,
    user: str | None = None,
    token: str | None = None,
    policy: AssurancePolicy | None = None,
    db_dir: Path | None = None,
    binary: Path | None = None,
    require_console: bool = False,
    make_zip: bool = False,
) -> Path:
    """Create `dest` (must be empty or absent); returns the zip path when `make_zip` else `dest`."""
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    src = resources.files("garrison.scan.buildpack") / "bin"
    for name in SCRIPTS:
        target = dest / "bin" / name
        target.write_bytes((src / name).read_bytes())
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    cfg: dict[str, Any] = {"version": __version__, "require_console": require_console}
    if console_url:
        cfg["console_url"] = console_url
    if user:
        cfg["user"] = user
    if token:
        cfg["token"] = token
    if ca_cert:
        shutil.copyfile(ca_cert, dest / "console-ca.pem")
        cfg["ca_cert_file"] = "console-ca.pem"
    if policy is not None:
        cfg["policy"] = policy.model_dump(mode="json")
    (dest / CONFIG).write_text(json.dumps(cfg, indent=2))
    if db_dir is not None:
        (dest / "vulndb").mkdir()
        shutil.copyfile(db_dir / "osv.sqlite", dest / "vulndb" / "osv.sqlite")
    if binary is not None:
        (dest / "vendor").mkdir()
        shutil.copyfile(binary, dest / "vendor" / "garrison")
        (dest / "vendor" / "garrison").chmod(0o755)
    (dest / "VERSION").write_text(__version__ + "\n")
    (dest / "manifest.yml").write_text(
        "---\nlanguage: garrison-scanner\ndefault_versions: []\ndependencies: []\ninclude_files:\n"
        + "".join(f"  - {p.relative_to(dest).as_posix()}\n" for p in sorted(dest.rglob("*")) if p.is_file())
    )
    if not make_zip:
        return dest
    zpath = dest.with_suffix(".zip")
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(dest.rglob("*")):
            if p.is_file():
                info = zipfile.ZipInfo.from_file(p, p.relative_to(dest).as_posix())
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, p.read_bytes())
    return zpath
