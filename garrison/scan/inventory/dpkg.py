"""Debian/Ubuntu packages from dpkg status, reported under their *source* package name for OSV.

OSV's Debian and Ubuntu advisories are keyed by source package (`openssl`, not `libssl3`), and by
release (`Debian:12`), which comes from os-release — possibly later in a tar stream, hence `finish`.
"""

from __future__ import annotations

from debian.deb822 import Deb822

from garrison.scan.inventory.interface import Detector
from garrison.scan.model import Package

_STATUS = ("var/lib/dpkg/status",)
_OS_RELEASE = ("etc/os-release", "usr/lib/os-release")


class DpkgDetector(Detector):
    name = "dpkg"

    def __init__(self) -> None:
        super().__init__()
        self.os_release: dict[str, str] = {}

    def wants(self, path: str, head: bytes) -> bool:
        return path in _STATUS or path in _OS_RELEASE or path.startswith("var/lib/dpkg/status.d/")

    def feed(self, path: str, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        if path in _OS_RELEASE:
            for line in text.splitlines():
                k, sep, v = line.partition("=")
                if sep:
                    self.os_release.setdefault(k.strip(), v.strip().strip("\"'"))
            return
        for para in Deb822.iter_paragraphs(text.splitlines(), use_apt_pkg=False):
            status = para.get("Status", "install ok installed")
            if "installed" not in status.split() or not para.get("Package") or not para.get("Version"):
                continue
            version = para["Version"]
            source = para.get("Source", para["Package"]).strip()
            if "(" in source:
                source, _, rest = source.partition("(")
                version = rest.rstrip(")").strip()
                source = source.strip()
            self.add("Debian", source, version, path, f"dpkg:{para['Package']}")

    def finish(self) -> list[Package]:
        distro = self.os_release.get("ID", "debian").lower()
        eco = "Ubuntu" if distro == "ubuntu" else "Debian"
        release = self.os_release.get("VERSION_ID", "")
        ecosystem = f"{eco}:{release}" if release else eco
        for p in self.packages:
            p.ecosystem = ecosystem
            p.purl = f"pkg:deb/{distro}/{p.name}@{p.version}"
        return self.packages
