"""What an ecosystem detector looks like: it sees every file once and reports packages at the end.

Detectors are stateful per scan because some facts arrive in any order inside a tar stream (dpkg
status needs /etc/os-release to name its OSV ecosystem release).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from garrison.scan.model import Package, ScanNotice


class Detector(ABC):
    name: str = ""

    def __init__(self) -> None:
        self.packages: list[Package] = []
        self.notices: list[ScanNotice] = []

    @abstractmethod
    def wants(self, path: str, head: bytes) -> bool:
        """Cheap test on the path and the first bytes: should `feed` get this file's content?"""

    @abstractmethod
    def feed(self, path: str, data: bytes) -> None:
        """Parse one file; problems become notices, never exceptions."""

    def finish(self) -> list[Package]:
        return self.packages

    def add(self, ecosystem: str, name: str, version: str, path: str, source: str, purl: str = "") -> None:
        name, version = name.strip(), version.strip()
        if name and version:
            self.packages.append(
                Package(
                    ecosystem=ecosystem,
                    name=name,
                    version=version,
                    purl=purl,
                    locations=[path],
                    source=source,
                )
            )

    def note(self, path: str, message: str) -> None:
        self.notices.append(ScanNotice(path=path, message=message))


def basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]
