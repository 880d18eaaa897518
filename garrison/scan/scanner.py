"""The one orchestrator: walk the target once, feed every file to inventory, secrets and malware
checks, match the inventory against the vulnerability index, and apply the assurance policy."""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from garrison import __version__
from garrison.scan.assurance import AssurancePolicy, apply
from garrison.scan.inventory import all_detectors
from garrison.scan.malware import IndicatorError, MalwareScanner
from garrison.scan.model import Package, ScanReport, Severity, Summary
from garrison.scan.secrets import scan_secrets
from garrison.scan.source import Entry, Limits, ScanRefused, Walk, iter_dir, iter_tar
from garrison.scan.vulndb.index import VulnIndex
from garrison.scan.vulndb.match import match_packages

__all__ = ["ScanOptions", "ScanRefused", "scan"]


@dataclass
class ScanOptions:
    db_dir: Path | None = None  # None: inventory, secrets and malware only
    app_name: str = ""
    host: bool = False
    secrets: bool = True
    malware: MalwareScanner = field(default_factory=MalwareScanner)
    limits: Limits = field(default_factory=Limits)
    policy: AssurancePolicy | None = None
    progress: Callable[[int, int], None] | None = None


Kind = Literal["droplet", "directory", "host"]


def _entries(target: Path, opts: ScanOptions, walk: Walk) -> tuple[Kind, Iterator[Entry]]:
    hash_big = bool(opts.malware.hashes)
    if opts.host or target.is_dir():
        kind: Kind = "host" if opts.host else "directory"
        return kind, iter_dir(
            target, walk, opts.limits, host=opts.host, hash_big=hash_big, progress=opts.progress
        )
    if not target.exists():
        raise ScanRefused(f"{target}: no such file or directory")
    if (
        target.is_file()
        and not tarfile.is_tarfile(target)
        and target.suffix.lower() in (".jar", ".war", ".ear")
    ):
        return "directory", _single(target, walk, opts.limits)
    return "droplet", iter_tar(target, walk, opts.limits, hash_big=hash_big, progress=opts.progress)


def _single(target: Path, walk: Walk, limits: Limits) -> Iterator[Entry]:
    import hashlib

    data = target.read_bytes() if target.stat().st_size <= limits.max_file_bytes else None
    if data is None:
        raise ScanRefused(f"{target}: larger than the {limits.max_file_bytes}-byte file limit")
    walk.files, walk.bytes = 1, len(data)
    walk.digest = "sha256:" + hashlib.sha256(data).hexdigest()
    yield Entry(target.name, len(data), data)


def _dedupe(packages: list[Package]) -> list[Package]:
    """Installed metadata and lock files name the same package: merge, keeping every location."""
    out: dict[tuple[str, str, str], Package] = {}
    for p in packages:
        key = (p.ecosystem, p.name.lower() if p.ecosystem != "Go" else p.name, p.version)
        if key in out:
            for loc in p.locations:
                if loc not in out[key].locations:
                    out[key].locations.append(loc)
        else:
            out[key] = p
    return sorted(out.values(), key=lambda p: (p.ecosystem, p.name.lower(), p.version))


def scan(target: Path, opts: ScanOptions | None = None) -> ScanReport:
    """Scan a droplet tarball, a directory or (opts.host) a host root; raises ScanRefused on bad input."""
    opts = opts or ScanOptions()
    index = VulnIndex(opts.db_dir) if opts.db_dir is not None else None
    try:
        walk = Walk()
        kind, entries = _entries(target, opts, walk)
        detectors = all_detectors()
        report = ScanReport(
            digest="",
            target=str(target),
            target_kind=kind,
            app_name=opts.app_name,
            scanner_version=__version__,
        )
        for e in entries:
            data = e.data
            if data is not None:
                head = data[:8]
                for d in detectors:
                    if d.wants(e.path, head):
                        d.feed(e.path, data)
                if opts.secrets:
                    report.secrets.extend(scan_secrets(e.path, data))
            if opts.malware.active:
                try:
                    report.malware.extend(opts.malware.check(e.path, data, e.sha256))
                except IndicatorError as exc:
                    walk.note(e.path, str(exc))
        report.digest = walk.digest
        packages: list[Package] = []
        for d in detectors:
            packages.extend(d.finish())
            walk.notices.extend(d.notices)
        report.packages = _dedupe(packages)
        if index is not None:
            report.db_updated_at = index.updated_at()
            report.vulnerabilities = match_packages(index, report.packages)
        report.notices = walk.notices
        report.summary = Summary(
            packages=len(report.packages),
            vulnerabilities=len(report.vulnerabilities),
            by_severity={
                s.value: n
                for s in Severity
                if (n := sum(1 for v in report.vulnerabilities if v.severity == s))
            },
            secrets=len(report.secrets),
            malware=len(report.malware),
            files=walk.files,
            bytes=walk.bytes,
            notices=len(report.notices),
        )
        if opts.policy is not None:
            apply(report, opts.policy)
        return report
    finally:
        if index is not None:
            index.close()
