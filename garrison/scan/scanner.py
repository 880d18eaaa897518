"""The one orchestrator: walk the target once, feed every file to inventory, secrets and malware
checks, match the inventory against the vulnerability index, and apply the assurance policy."""

from __future__ import annotations

import hashlib
import re
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from garrison import __version__
from garrison.scan.assurance import AssurancePolicy, apply
from garrison.scan.inventory import Detector, all_detectors
from garrison.scan.malware import MalwareScanner
from garrison.scan.model import Package, ScanReport, Severity, Summary, VulnerabilityFinding
from garrison.scan.nested import is_archive, iter_nested
from garrison.scan.secrets import in_dependency_tree, scan_secrets, secret_candidate
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
    secrets_in_deps: bool = False  # also search dependency trees (site-packages, node_modules, ...)
    malware: MalwareScanner = field(default_factory=MalwareScanner)
    limits: Limits = field(default_factory=Limits)
    policy: AssurancePolicy | None = None
    progress: Callable[[int, int], None] | None = None


_SHARED_LIB = re.compile(r"\.so(\.[0-9.]+)?$")
_PEM = b"-----BEG"  # the 8 bytes `want` sees of a PEM file (private keys are confirmed by the detector)
Kind = Literal["droplet", "directory", "host"]


def _host_want(detectors: list[Detector], opts: ScanOptions) -> Callable[[str, bytes], bool] | None:
    """On a host, read only what a detector (or malware check) asks for; skip shared libraries."""
    if not opts.host or opts.malware.active:
        return None

    def want(path: str, head: bytes) -> bool:
        if head.startswith(b"\x7fELF") and _SHARED_LIB.search(path):
            return False
        # on a host, secrets means private keys (a cell's config is full of other credentials by design)
        return any(d.wants(path, head) for d in detectors) or (opts.secrets and head.startswith(_PEM))

    return want


def _entries(
    target: Path, opts: ScanOptions, walk: Walk, detectors: list[Detector]
) -> tuple[Kind, Iterator[Entry]]:
    hash_big = bool(opts.malware.hashes)
    if opts.host or target.is_dir():
        kind: Kind = "host" if opts.host else "directory"
        return kind, iter_dir(
            target,
            walk,
            opts.limits,
            host=opts.host,
            hash_big=hash_big,
            progress=opts.progress,
            want=_host_want(detectors, opts),
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
    """A jar/war/ear given directly: one entry, digest of the file."""
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


_TEXT_KEEP = 1 << 20  # metadata files kept to find the line naming a package (SARIF regions)
_TEXT_BUDGET = 64 << 20


def _line_of(text: bytes, name: str, version: str) -> int | None:
    """First line naming `version` next to `name` (lock files, requirements), else the first line
    naming the version (package.json, METADATA), else None."""
    lines = text.split(b"\n")
    ver, nm = version.encode(), name.encode().lower()
    only_version = None
    for i, line in enumerate(lines, 1):
        if ver in line:
            if nm in line.lower():
                return i
            only_version = only_version or i
    return only_version


def _add_lines(
    findings: list[VulnerabilityFinding], packages: list[Package], texts: dict[str, bytes]
) -> None:
    purls = {(p.ecosystem, p.name, p.version): p.purl for p in packages}
    for f in findings:
        f.purl = purls.get((f.ecosystem, f.package, f.version), "")
        for loc in f.locations:
            text = texts.get(loc)
            if text is not None and (n := _line_of(text, f.package.split(":")[-1], f.version)):
                f.lines[loc] = n


def db_revision(index: VulnIndex) -> str:
    """`<import generation>@<update time>`: which database state a verdict was computed with."""
    updated = index.updated_at()
    return f"{index.generation()}@{updated.isoformat(timespec='seconds') if updated else '-'}"


def _scan_members(
    path: str, data: bytes, opts: ScanOptions, report: ScanReport, walk: Walk, deadline: float
) -> None:
    """Secrets and malware inside an archive and the archives nested in it (`a.jar!/b.zip!/c`)."""
    for inner, body in iter_nested(path, data, walk.note, deadline=deadline):
        if opts.secrets and secret_candidate(inner, include_deps=opts.secrets_in_deps):
            report.secrets.extend(scan_secrets(inner, body))
        if opts.malware.active:
            found, problem = opts.malware.check(inner, body)
            report.malware.extend(found)
            if problem:
                walk.note(inner, problem)


def scan(target: Path, opts: ScanOptions | None = None) -> ScanReport:
    """Scan a droplet tarball, a directory or (opts.host) a host root; raises ScanRefused on bad input."""
    opts = opts or ScanOptions()
    index = VulnIndex(opts.db_dir) if opts.db_dir is not None else None
    try:
        walk = Walk()
        detectors = all_detectors()
        kind, entries = _entries(target, opts, walk, detectors)
        report = ScanReport(
            digest="",
            target=str(target),
            target_kind=kind,
            app_name=opts.app_name,
            scanner_version=__version__,
        )
        texts: dict[str, bytes] = {}
        deadline = time.monotonic() + opts.limits.max_seconds
        budget = _TEXT_BUDGET
        for e in entries:
            data = e.data
            if data is not None:
                head = data[:8]
                fed = False
                for d in detectors:
                    if d.wants(e.path, head):
                        d.feed(e.path, data)
                        fed = True
                if fed and len(data) <= min(_TEXT_KEEP, budget) and b"\0" not in head:
                    texts[e.path] = data
                    budget -= len(data)
                if opts.secrets and secret_candidate(e.path, include_deps=opts.secrets_in_deps):
                    report.secrets.extend(scan_secrets(e.path, data))
            if opts.malware.active:
                found, problem = opts.malware.check(e.path, data, e.sha256)
                report.malware.extend(found)
                if problem:
                    walk.note(e.path, problem)
            secrets_inside = opts.secrets and (opts.secrets_in_deps or not in_dependency_tree(e.path))
            if (
                data is not None
                and (secrets_inside or opts.malware.active)
                and is_archive(e.path, data[:512])
            ):
                _scan_members(e.path, data, opts, report, walk, deadline)
        report.digest = walk.digest
        packages: list[Package] = []
        for d in detectors:
            packages.extend(d.finish())
            walk.notices.extend(d.notices)
        report.packages = _dedupe(packages)
        if index is not None:
            report.db_updated_at = index.updated_at()
            report.db_revision = db_revision(index)
            report.vulnerabilities = match_packages(index, report.packages)
            _add_lines(report.vulnerabilities, report.packages, texts)
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
