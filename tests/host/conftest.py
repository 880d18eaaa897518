"""Host-security fixtures: a root filesystem the Ubuntu 22.04 CIS content applies to."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def jammy_root(tmp: Path) -> Path:
    """This machine's accounts, PAM, login and package state under an Ubuntu 22.04 release file (what
    a stemcell has in /etc/lsb-release), so that the content's applicability check selects it."""
    root = tmp / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs", "pam.d", "security", "default"):
        src = Path("/etc") / name
        if src.is_dir():
            shutil.copytree(src, root / "etc" / name, symlinks=True)
        elif src.exists():
            shutil.copy2(src, root / "etc" / name)
    (root / "var/lib/dpkg").mkdir(parents=True)
    shutil.copy2("/var/lib/dpkg/status", root / "var/lib/dpkg/status")
    (root / "etc/lsb-release").write_text(
        "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_CODENAME=jammy\n"
        'DISTRIB_DESCRIPTION="Ubuntu 22.04.5 LTS"\n'
    )
    os.chmod(root / "etc/passwd", 0o644)
    return root


@pytest.fixture
def jammy(tmp_path: Path) -> Path:
    return jammy_root(tmp_path)
