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
import tempfile
from pathlib import Path
from typing import Any, TextIO

from garrison.scan.assurance import AssurancePolicy, apply
from garrison.scan.console import ConsoleConfig, ConsoleError, fetch_policy, post_report
from garrison.scan.identity import DropletIdentity, collect_tree, write_identity
from garrison.scan.model import AppRef, Package, ScanReport, Summary
from garrison.scan.scanner import ScanOptions, ScanRefused, scan

CONFIG = "garrison-buildpack.json"


def _say(out: TextIO, msg: str) -> None:
    out.write(msg + "\n")
    out.flush()


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


def _truthy(v: str | None) -> bool | None:
    if v is None or v.strip() == "":
        return None
    return v.strip().lower() in ("1", "true", "yes", "on")


def _console(cfg: dict[str, Any], buildpack_dir: Path, cache_dir: Path | None) -> ConsoleConfig | None:
    """Console settings: the app's environment (`cf set-env`, passed to staging) overrides what
    `garrison buildpack export` bundled. GARRISON_CA_CERT is a path or the PEM text itself."""
    env = os.environ
    url = env.get("GARRISON_CONSOLE_URL") or cfg.get("console_url")
    if not url:
        return None
    ca: str | None = None
    env_ca = env.get("GARRISON_CA_CERT", "").strip()
    if env_ca.startswith("-----BEGIN"):
        where = cache_dir if cache_dir is not None and cache_dir.is_dir() else Path(tempfile.gettempdir())
        fd, name = tempfile.mkstemp(prefix="garrison-ca-", suffix=".pem", dir=where)
        with os.fdopen(fd, "w") as f:
            f.write(env_ca + "\n")
        ca = name
    elif env_ca:
        ca = env_ca
    elif cfg.get("ca_cert_file"):
        ca = str(buildpack_dir / cfg["ca_cert_file"])
    token = env.get("GARRISON_TOKEN") or None
    user = env.get("GARRISON_USER") or None
    if token is None and user is None:
        token, user = cfg.get("token"), cfg.get("user")
    return ConsoleConfig(
        url=str(url).rstrip("/"),
        user=user,
        password=env.get("GARRISON_PASSWORD") or cfg.get("password"),
        token=token,
        ca_cert=ca,
        timeout=float(env.get("GARRISON_CONSOLE_TIMEOUT") or 30),
    )


def run(
    *,
    phase: str,
    buildpack_dir: Path,
    build_dir: Path,
    deps_dir: Path | None,
    deps_idx: str | None,
    cache_dir: Path | None = None,
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
    require_console = _truthy(os.environ.get("GARRISON_REQUIRE_CONSOLE"))
    if require_console is None:
        require_console = bool(cfg.get("require_console"))
    console = _console(cfg, buildpack_dir, cache_dir)
    policy: AssurancePolicy | None = None
    try:
        if cfg.get("policy") is not None:
            policy = AssurancePolicy.model_validate(cfg["policy"])
    except ValueError as exc:
        _say(out, f"       **ERROR** Garrison: the bundled assurance policy is invalid: {exc}")
        return 2
    if policy is None and console is not None:
        try:
            policy = fetch_policy(console)
            _say(out, f"       assurance policy '{policy.name}' from {console.url}")
        except ConsoleError as exc:
            if require_console:
                _say(out, f"       **ERROR** Garrison: cannot load the assurance policy: {exc}")
                _say(
                    out,
                    "       **ERROR** Garrison: the console is required (require_console); failing staging",
                )
                return 2
            _say(out, f"       WARNING: cannot load the assurance policy from the console: {exc}")
            _say(out, "       WARNING: console not required: applying the default assurance policy")
    policy = policy or AssurancePolicy()
    db_dir: Path | None = None
    env_db = os.environ.get("GARRISON_DB_DIR")
    for cand in (buildpack_dir / "vulndb", Path(env_db) if env_db else None):
        if cand is not None and (cand / "osv.sqlite").exists():
            db_dir = cand
            break
    if db_dir is None:
        _say(out, "       WARNING: no vulnerability database bundled; vulnerability matching skipped")
    app = AppRef.from_vcap(os.environ.get("VCAP_APPLICATION"))
    try:
        report = scan(build_dir, ScanOptions(db_dir=db_dir, app_name=app.name if app else ""))
        report.target = "app"
        if deps_dir is not None and deps_dir.is_dir():
            for d in sorted(deps_dir.iterdir()):
                if d.is_dir() and d.name != deps_idx:
                    _merge(report, scan(d, ScanOptions(db_dir=db_dir)), f"deps/{d.name}")
        ident: DropletIdentity | None = None
        if deps_dir is not None and deps_idx is not None:
            # the droplet's content digest, the same one the blobstore rescan and the defender compute
            content = collect_tree({"app": build_dir, "deps": deps_dir})
            ident = DropletIdentity(
                digest=content.digest(own={f"deps/{deps_idx}"}),
                app=app or AppRef(),
                deps_idx=deps_idx,
                phase="finalize" if phase == "finalize" else "supply",
                scanner_version=report.scanner_version,
            )
            report.digest = ident.digest
    except ScanRefused as exc:
        _say(out, f"       **ERROR** Garrison: scan refused: {exc}")
        return 2
    report.app = app
    report.source = "staging"
    report.summary = Summary(
        **{
            **report.summary.model_dump(),
            "packages": len(report.packages),
            "vulnerabilities": len(report.vulnerabilities),
            "by_severity": _by_severity(report),
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
        f"{s.malware} malware; droplet {report.digest}",
    )
    if deps_dir is not None and deps_idx is not None and ident is not None:
        own = deps_dir / deps_idx
        write_identity(own, ident)
        (own / "garrison-scan.json").write_text(report.model_dump_json())
        (own / "config.yml").write_text("name: garrison-scanner\nconfig: {}\n")
    if console is not None:
        try:
            post_report(console, report)
            _say(out, f"       report sent to {console.url}")
        except ConsoleError as exc:
            _say(out, f"       WARNING: could not report to the console: {exc}")
            if require_console:
                _say(out, "       **ERROR** Garrison: console reporting is required; failing staging")
                return 2
    if report.verdict == "fail":
        _say(out, f"       **ERROR** Garrison assurance policy '{policy.name}' failed; staging refused:")
        for r in report.reasons:
            _say(out, f"       - {r}")
        return 1
    _say(out, f"       assurance policy '{policy.name}': PASS")
    return 0


def _by_severity(report: ScanReport) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in report.vulnerabilities:
        out[v.severity.value] = out.get(v.severity.value, 0) + 1
    return out
