"""CIS benchmark with OpenSCAP and the SCAP Security Guide content (Debian's `ssg-debderived`).

Diego cells run Ubuntu stemcells; the content for the host's release is chosen from its
/etc/lsb-release. A mounted root filesystem is evaluated the way `oscap-chroot` does it
(OSCAP_PROBE_ROOT). Where no content applies (this Debian 12 test machine), the report says so
instead of printing a score of rules that were never evaluated."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from garrison.host.model import CisReport, RuleResult

SSG_CONTENT = Path(os.environ.get("GARRISON_SSG_CONTENT", "/usr/share/xml/scap/ssg/content"))
PROFILE_PREFIX = "xccdf_org.ssgproject.content_profile_"
PROFILES = ("cis_level1_server", "cis_level2_server", "cis_level1_workstation", "cis_level2_workstation")

# Ubuntu codename -> SSG product. Stemcells: bionic (xenial-era cells are gone), jammy today.
_UBUNTU = {"xenial": "ubuntu1604", "bionic": "ubuntu1804", "focal": "ubuntu2004", "jammy": "ubuntu2204"}
_OSCAP_TIMEOUT = 1800


class CisError(RuntimeError):
    """OpenSCAP missing, content missing, or the evaluation failed: the message says which."""


def _kv(path: Path) -> dict[str, str]:
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def describe_release(root: Path) -> str:
    """'Ubuntu 22.04 (jammy)', 'Debian GNU/Linux 12 (bookworm)', ... for messages."""
    lsb = _kv(root / "etc/lsb-release")
    if lsb.get("DISTRIB_ID"):
        return f"{lsb['DISTRIB_ID']} {lsb.get('DISTRIB_RELEASE', '?')} ({lsb.get('DISTRIB_CODENAME', '?')})"
    osr = _kv(root / "etc/os-release")
    return osr.get("PRETTY_NAME") or "an unknown Linux release (no /etc/lsb-release or /etc/os-release)"


def datastream_for(root: Path) -> Path | None:
    """The SSG data stream that applies to the release installed under `root`, if any."""
    lsb = _kv(root / "etc/lsb-release")
    product = _UBUNTU.get(lsb.get("DISTRIB_CODENAME", "")) if lsb.get("DISTRIB_ID") == "Ubuntu" else None
    if product is None:
        return None
    path = SSG_CONTENT / f"ssg-{product}-ds.xml"
    return path if path.is_file() else None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(el: ET.Element | None) -> str:
    return "".join(el.itertext()).strip() if el is not None else ""


def parse_results(path: Path) -> tuple[str, float | None, list[RuleResult]]:
    """(benchmark id, oscap score, selected rules' results) from an XCCDF results file."""
    titles: dict[str, tuple[str, str]] = {}
    results: list[RuleResult] = []
    benchmark, score = "", None
    for _event, el in ET.iterparse(path, events=("end",)):
        tag = _local(el.tag)
        if tag == "Rule":
            title = remediation = ""
            for child in el:
                ctag = _local(child.tag)
                if ctag == "title" and not title:
                    title = _text(child)
                elif (ctag == "fixtext" and not remediation) or (ctag == "fix" and not remediation and "script:sh" in child.get("system", "")):
                    remediation = _text(child)
            titles[el.get("id", "")] = (title, remediation[:8000])
            el.clear()
        elif tag == "TestResult":
            for child in el:
                ctag = _local(child.tag)
                if ctag == "benchmark":
                    benchmark = child.get("id", "")
                elif ctag == "score" and child.get("system") == "urn:xccdf:scoring:default":
                    score = float(child.text or 0)
                elif ctag == "rule-result":
                    outcome = next((c.text or "" for c in child if _local(c.tag) == "result"), "unknown")
                    if outcome == "notselected":
                        continue
                    rid = child.get("idref", "")
                    title, remediation = titles.get(rid, ("", ""))
                    results.append(
                        RuleResult(
                            id=rid,
                            title=title,
                            result=outcome,  # type: ignore[arg-type]
                            severity=child.get("severity", "unknown"),
                            remediation=remediation,
                        )
                    )
    return benchmark, score, results


def run_cis(
    root: Path = Path("/"),
    profile: str = "cis_level1_server",
    datastream: Path | None = None,
    host: str | None = None,
) -> CisReport:
    """Evaluate the CIS profile on the host (root '/') or on a root filesystem mounted at `root`."""
    oscap = shutil.which("oscap")
    if oscap is None:
        raise CisError("OpenSCAP is not installed (Debian/Ubuntu package openscap-scanner)")
    root = root.resolve()
    if not root.is_dir():
        raise CisError(f"{root}: not a directory")
    full_profile = profile if profile.startswith(PROFILE_PREFIX) else PROFILE_PREFIX + profile
    ds = datastream or datastream_for(root)
    base = CisReport(
        host=host or socket.gethostname(), root=str(root), profile=profile, datastream=str(ds or ""),
        applicable=False,
    )
    if ds is None:
        base.reason = (
            f"no CIS content applies to {describe_release(root)}: the SCAP Security Guide content in "
            f"{SSG_CONTENT} covers Ubuntu 16.04-22.04 (Diego stemcells); nothing was evaluated"
        )
        return base
    if not ds.is_file():
        raise CisError(f"SCAP content {ds} not found (Debian/Ubuntu package ssg-debderived)")
    env = dict(os.environ)
    if str(root) != "/":
        env["OSCAP_PROBE_ROOT"] = str(root)  # what oscap-chroot does
    with tempfile.TemporaryDirectory(prefix="garrison-cis-") as tmp:
        out = Path(tmp) / "results.xml"
        proc = subprocess.run(
            [oscap, "xccdf", "eval", "--profile", full_profile, "--results", str(out), str(ds)],
            env=env, capture_output=True, text=True, timeout=_OSCAP_TIMEOUT, check=False,
        )
        # oscap: 0 = all passed, 2 = some rule failed, anything else = the evaluation failed
        if proc.returncode not in (0, 2) or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise CisError(f"oscap failed (exit {proc.returncode}): {' | '.join(tail)}")
        benchmark, oscap_score, rules = parse_results(out)
    counts: dict[str, int] = {}
    for rule in rules:
        counts[rule.result] = counts.get(rule.result, 0) + 1
    decided = counts.get("pass", 0) + counts.get("fail", 0)
    base.benchmark, base.rules, base.counts, base.oscap_score = benchmark, rules, counts, oscap_score
    if decided == 0:
        base.reason = f"the {ds.name} content evaluated no rule on {describe_release(root)}"
        return base
    base.applicable = True
    base.score = round(100.0 * counts.get("pass", 0) / decided, 1)
    return base
