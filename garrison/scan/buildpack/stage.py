"""What bin/supply and bin/finalize run: scan the staged app (and earlier buildpacks' deps), report
to the console, and fail staging with a readable message when the assurance verdict is `fail`.

Configuration comes from `garrison-buildpack.json` in the buildpack (written by `garrison buildpack
export`) and can be overridden per app with environment variables (`cf set-env`), which CF passes to
staging: GARRISON_CONSOLE_URL, GARRISON_USER, GARRISON_PASSWORD, GARRISON_TOKEN, GARRISON_CA_CERT.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from garrison.scan.assurance import AssurancePolicy, apply
from garrison.scan.console import ConsoleConfig, ConsoleError, fetch_policy, post_report
from garrison.scan.model import Package, ScanReport, Summary
from garrison.scan.scanner import ScanOptions, ScanRefused, scan

CONFIG = "garrison-buildpack.json"


def _say(out: TextIO, msg: str) -> None:
    out.write(msg + "\n")
    out.flush()


def _app_name() -> str:
    try:
        return str(json.loads(os.environ.get("VCAP_APPLICATION", "{}")).get("application_name", ""))
    except ValueError:
        return ""


def _merge(primary: ScanReport, extra: ScanReport, prefix: str) -> None:
    """Fold a deps-dir scan into the build-dir report, prefixing paths so findings stay locatable."""

    def fix(locs: list[str]) -> list[str]:
        return [f"{prefix}/{p}" for p in locs]

    known = {(p.ecosystem, p.name, p.version): p for p in primary.packages}
    for p in extra.packages:
        key = (p.ecosystem, p.name, p.version)
        if key in known:
            known[key].locations.extend(fix(p.locations))
        else:
            primary.packages.append(Package(**{**p.model_dump(), "locations": fix(p.locations)}))
    seen = {(v.id, v.package, v.version) for v in primary.vulnerabilities}
    for v in extra.vulnerabilities:
        if (v.id, v.package, v.version) not in seen:
            v.locations = fix(v.locations)
            primary.vulnerabilities.append(v)
    for s in extra.secrets:
        s.path = f"{prefix}/{s.path}"
        primary.secrets.append(s)
    for m in extra.malware:
        m.path = f"{prefix}/{m.path}"
        primary.malware.append(m)
    for n in extra.notices:
        n.path = f"{prefix}/{n.path}"
        primary.notices.append(n)
    primary.summary.files += extra.summary.files
    primary.summary.bytes += extra.summary.bytes


def run(
    *,
    phase: str,
    buildpack_dir: Path,
    build_dir: Path,
    deps_dir: Path | None,
    deps_idx: str | None,
    out: TextIO = sys.stdout,
) -> int:
    """Return the process exit code: 0 staged, 1 policy failure (staging fails), 2 scanner error."""
    cfg: dict[str, Any] = {}
    cfg_path = buildpack_dir / CONFIG
    if cfg_path.exists():
        try:
            cfg = json.loads(cfg_path.read_text())
        except ValueError as exc:
            _say(out, f"       **ERROR** Garrison: {cfg_path} is not valid JSON: {exc}")
            return 2
    _say(out, f"-----> Garrison scanner ({phase})")
    ca = cfg.get("ca_cert_file")
    console = ConsoleConfig.from_env(
        cfg.get("console_url"),
        user=cfg.get("user"),
        token=cfg.get("token"),
        ca_cert=str(buildpack_dir / ca) if ca else None,
    )
    if console and os.environ.get("GARRISON_TOKEN"):
        console.token = os.environ["GARRISON_TOKEN"]
    policy: AssurancePolicy | None = None
    try:
        if cfg.get("policy") is not None:
            policy = AssurancePolicy.model_validate(cfg["policy"])
        elif console is not None:
            policy = fetch_policy(console)
            _say(out, f"       assurance policy '{policy.name}' from {console.url}")
    except (ValueError, ConsoleError) as exc:
        _say(out, f"       **ERROR** Garrison: cannot load the assurance policy: {exc}")
        return 2
    policy = policy or AssurancePolicy()
    db_dir: Path | None = None
    env_db = os.environ.get("GARRISON_DB_DIR")
    for cand in (buildpack_dir / "vulndb", Path(env_db) if env_db else None):
        if cand is not None and (cand / "osv.sqlite").exists():
            db_dir = cand
            break
    if db_dir is None:
        _say(out, "       WARNING: no vulnerability database bundled; vulnerability matching skipped")
    app = _app_name()
    try:
        report = scan(build_dir, ScanOptions(db_dir=db_dir, app_name=app))
        report.target = "app"
        if deps_dir is not None and deps_dir.is_dir():
            for d in sorted(deps_dir.iterdir()):
                if d.is_dir() and d.name != deps_idx:
                    _merge(report, scan(d, ScanOptions(db_dir=db_dir)), f"deps/{d.name}")
    except ScanRefused as exc:
        _say(out, f"       **ERROR** Garrison: scan refused: {exc}")
        return 2
    report.summary = Summary(
        **{
            **report.summary.model_dump(),
            "packages": len(report.packages),
            "vulnerabilities": len(report.vulnerabilities),
            "secrets": len(report.secrets),
            "malware": len(report.malware),
            "notices": len(report.notices),
        }
    )
    apply(report, policy)
    s = report.summary
    _say(
        out,
        f"       {s.packages} packages, {s.vulnerabilities} vulnerabilities, {s.secrets} secrets, "
        f"{s.malware} malware; digest {report.digest}",
    )
    if deps_dir is not None and deps_idx is not None:
        own = deps_dir / deps_idx
        own.mkdir(parents=True, exist_ok=True)
        (own / "garrison-scan.json").write_text(report.model_dump_json())
        (own / "config.yml").write_text("name: garrison-scanner\nconfig: {}\n")
        prof = own / "profile.d"
        prof.mkdir(exist_ok=True)
        (prof / "garrison.sh").write_text(f"export GARRISON_DROPLET_DIGEST={report.digest}\n")
    if console is not None:
        try:
            post_report(console, report)
            _say(out, f"       report sent to {console.url}")
        except ConsoleError as exc:
            _say(out, f"       WARNING: could not report to the console: {exc}")
            if cfg.get("require_console"):
                _say(out, "       **ERROR** Garrison: console reporting is required; failing staging")
                return 2
    if report.verdict == "fail":
        _say(out, f"       **ERROR** Garrison assurance policy '{policy.name}' failed; staging refused:")
        for r in report.reasons:
            _say(out, f"       - {r}")
        return 1
    _say(out, f"       assurance policy '{policy.name}': PASS")
    return 0
