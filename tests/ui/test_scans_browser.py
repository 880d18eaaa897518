"""Scan results, one scan report (findings with severity and fixed versions, secrets, malware, waived
findings, the gate's answer), verdict history and the assurance policy editor — in Chromium against a
real console. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from garrison.scan.assurance import AssurancePolicy, apply
from garrison.scan.model import (
    AppRef,
    MalwareFinding,
    Package,
    ScanNotice,
    ScanReport,
    SecretFinding,
    Severity,
    VulnerabilityFinding,
)
from tests.ui import test_browser
from tests.ui.test_browser import login, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]
context, page = test_browser.context, test_browser.page  # the same signed-in page fixtures
TIMEOUT_MS = 20_000
SHOP = AppRef(guid=str(uuid.uuid4()), name="shop-web", space="prod", org="acme")
HOSTILE = AppRef(guid=str(uuid.uuid4()), name='<img src=x onerror="window.pwned=1">', space="dev", org="acme")
DIGEST = "sha256:" + "5" * 64


def _report(app: AppRef, verdict_db: str, *, vulnerable: bool, source: str) -> dict[str, Any]:
    r = ScanReport(
        digest=DIGEST,
        target="app",
        app=app,
        app_name=app.name,
        source=source,  # type: ignore[arg-type]
        db_updated_at=datetime.fromisoformat(verdict_db),
        db_revision=f"{'2' if vulnerable else '1'}@{verdict_db}",
        packages=[Package(ecosystem="PyPI", name="werkzeug", version="2.2.2")],
    )
    if source == "cli":
        r.archive_sha256 = "sha256:" + "e" * 64
    if vulnerable:
        r.vulnerabilities = [
            VulnerabilityFinding(
                id="GHSA-2g68-c3qc-8985",
                aliases=["CVE-2024-34069"],
                ecosystem="PyPI",
                package="werkzeug",
                version="2.2.2",
                fixed_versions=["3.0.3"],
                severity=Severity.HIGH,
                cvss_score=7.5,
                summary="debugger remote code execution",
                locations=["deps/0/python/lib/python3.11/site-packages/werkzeug-2.2.2.dist-info"],
            ),
            VulnerabilityFinding(
                id="PYSEC-2023-221",
                ecosystem="PyPI",
                package="werkzeug",
                version="2.2.2",
                fixed_versions=["2.3.8"],
                severity=Severity.MEDIUM,
            ),
        ]
        r.secrets = [
            SecretFinding(
                kind="Private Key", path="app/certs/server.key", line=1, fingerprint="sha256:0badc0de"
            )
        ]
        r.malware = [MalwareFinding(path="app/bin/miner", sha256="sha256:" + "9" * 64, rule="hash:xmrig")]
        r.notices = [ScanNotice(path="app/link", message="refused: symlink points outside the archive")]
    policy = AssurancePolicy(
        name="prod",
        thresholds={"critical": 0, "high": 0},  # type: ignore[arg-type]
        vulnerability_exceptions=[{"id": "PYSEC-2023-221", "reason": "vendor patch applied"}],  # type: ignore[list-item]
        max_db_age_days=None,
    )
    apply(r, policy, now=datetime(2026, 12, 2, tzinfo=UTC))
    r.summary.by_severity = {v.severity.value: 1 for v in r.vulnerabilities}
    r.summary.vulnerabilities, r.summary.secrets, r.summary.malware = (
        len(r.vulnerabilities),
        len(r.secrets),
        len(r.malware),
    )
    return r.model_dump(mode="json")


@pytest.fixture(scope="module")
def seeded(console: Any) -> dict[str, int]:
    with console.api() as c:
        c.put(
            "/policies/assurance",
            json={"name": "prod", "thresholds": {"critical": 0, "high": 0}, "runtime_effect": "prevent"},
        ).raise_for_status()
        ids = {
            "staging": c.post(
                "/scans", json=_report(SHOP, "2026-11-01T00:00:00+00:00", vulnerable=False, source="staging")
            ).json()["id"],
            "rescan": c.post(
                "/scans", json=_report(SHOP, "2026-12-01T00:00:00+00:00", vulnerable=True, source="cli")
            ).json()["id"],
            "hostile": c.post(
                "/scans",
                json=_report(HOSTILE, "2026-11-01T00:00:00+00:00", vulnerable=False, source="staging"),
            ).json()["id"],
        }
    return ids


def test_scan_results_list_and_filters(page: Any, seeded: dict[str, int], screenshots: Path) -> None:
    from playwright.sync_api import expect

    page.click("nav >> text=Scan results")
    page.wait_for_url("**/scans")
    shop = page.locator("#scans-table tbody tr", has_text="acme/prod/shop-web")
    expect(shop).to_have_count(1)  # newest report per (app, droplet): the failed rescan
    expect(shop).to_contain_text("fail")
    expect(shop).to_contain_text("high 1")
    expect(shop).to_contain_text("2@2026-12-01")
    # hostile app names are text, never markup
    hostile = page.locator("#scans-table tbody tr", has_text='<img src=x onerror="window.pwned=1">')
    expect(hostile).to_have_count(1)
    assert page.evaluate("window.pwned") is None and page.locator("#scans-table img").count() == 0
    shot(page, screenshots, "scans")
    page.select_option("#scan-verdict", "pass")
    expect(page.locator("#scans-table tbody tr", has_text="shop-web")).to_have_count(0)
    page.select_option("#scan-verdict", "")
    page.fill("#scan-filter", SHOP.guid[:8])
    expect(page.locator("#scans-table tbody tr")).to_have_count(1)
    page.fill("#scan-filter", "no-such-app")
    expect(page.locator("#scans-empty")).to_be_visible()


def test_scan_report_page(page: Any, seeded: dict[str, int], screenshots: Path) -> None:
    from playwright.sync_api import expect

    page.goto("/scans")
    page.locator("#scans-table tbody tr", has_text="shop-web").locator("a").first.click()
    page.wait_for_url(f"**/scans/view?id={seeded['rescan']}")
    expect(page.locator("#scan-app")).to_have_text("acme/prod/shop-web")
    expect(page.locator("#scan-verdict")).to_have_text("fail")
    expect(page.locator("#scan-facts")).to_contain_text(SHOP.guid)
    expect(page.locator("#scan-facts")).to_contain_text("cli")
    expect(page.locator("#scan-reasons")).to_contain_text("1 high vulnerabilities (allowed 0)")
    vuln = page.locator("#vulns-table tbody tr", has_text="GHSA-2g68-c3qc-8985")
    expect(vuln).to_contain_text("high")
    expect(vuln).to_contain_text("CVE-2024-34069")
    expect(vuln.locator("td.fixed")).to_have_text("3.0.3")
    expect(page.locator("#vulns-table tbody tr", has_text="PYSEC-2023-221")).to_contain_text("waived")
    waived = page.locator("#waived-table tbody tr")
    expect(waived).to_have_count(1)
    expect(waived).to_contain_text("PYSEC-2023-221")
    expect(waived).to_contain_text("vendor patch applied")
    expect(page.locator("#secrets-table tbody tr")).to_contain_text("app/certs/server.key:1")
    expect(page.locator("#malware-table tbody tr")).to_contain_text("hash:xmrig")
    expect(page.locator("#notices-card")).to_be_visible()
    expect(page.locator("#scan-gate")).to_have_text("Run-time gate: fail a start of this droplet is refused")
    expect(page.locator("#app-history-table tbody tr")).to_have_count(2)
    shot(page, screenshots, "scan-report")
    # the older, passing staging report: the gate names the report that decides
    page.goto(f"/scans/view?id={seeded['staging']}")
    expect(page.locator("#scan-verdict")).to_have_text("pass")
    expect(page.locator("#scan-gate")).to_contain_text(f"report #{seeded['rescan']}")
    expect(page.locator("#vulns-empty")).to_be_visible()
    page.goto("/scans/view?id=999999")
    expect(page.locator("#scan-error")).to_contain_text("there is no scan report #999999")


def test_verdict_history(page: Any, seeded: dict[str, int], screenshots: Path) -> None:
    from playwright.sync_api import expect

    page.goto(f"/scans/history?app_guid={SHOP.guid}")
    rows = page.locator("#history-table tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("fail")
    expect(rows.first).to_contain_text("2@2026-12-01")
    expect(rows.nth(1)).to_contain_text("staging")
    shot(page, screenshots, "verdict-history")
    page.select_option("#history-verdict", "pass")
    expect(rows).to_have_count(1)
    assert "verdict=pass" in page.url


def test_assurance_policy_editor(page: Any, console: Any, seeded: dict[str, int], screenshots: Path) -> None:
    from playwright.sync_api import expect

    page.goto("/policies/assurance")
    expect(page.locator("#a-name")).to_have_value("prod")
    expect(page.locator("#a-effect")).to_have_value("prevent")
    expect(page.locator("#a-th-high")).to_have_value("0")
    expect(page.locator("#a-unknown")).to_have_value("fail")
    page.select_option("#a-unknown", "warn")
    page.fill("#a-th-medium", "3")
    page.fill("#a-dbage", "")
    page.click("#add-vexc")
    row = page.locator("#vexc-table tbody tr").last
    row.locator(".x-id").fill("CVE-2024-34069")
    row.locator(".x-packages").fill("werkzeug")
    # no reason: the API's 422 is shown on the field, nothing is stored
    page.click("#save-assurance")
    expect(page.locator("#assurance-error")).to_contain_text("vulnerability_exceptions.0.reason")
    expect(row.locator(".x-reason")).to_have_class("x-reason invalid")
    with console.api() as c:
        assert c.get("/policies/assurance").json()["vulnerability_exceptions"] == []
    shot(page, screenshots, "assurance-validation")
    row.locator(".x-reason").fill("not reachable: debugger disabled")
    row.locator(".x-expires").fill("2027-01-31")
    page.click("#save-assurance")
    expect(page.locator("#toast")).to_contain_text("Assurance policy saved")
    with console.api() as c:
        saved = c.get("/policies/assurance").json()
    assert saved["thresholds"]["medium"] == 3 and saved["max_db_age_days"] is None
    assert saved["unknown_severity"] == "warn"
    assert saved["vulnerability_exceptions"] == [
        {
            "id": "CVE-2024-34069",
            "packages": ["werkzeug"],
            "reason": "not reachable: debugger disabled",
            "expires": "2027-01-31",
        }
    ]
    expect(page.locator("#assurance-revision")).to_contain_text(f"Revision {saved['revision']}")
    shot(page, screenshots, "assurance-policy")
    page.reload()
    expect(page.locator("#vexc-table tbody tr .x-id")).to_have_value("CVE-2024-34069")


def test_auditor_reads_but_cannot_edit_the_assurance_policy(
    browser: Any, console: Any, seeded: dict[str, int]
) -> None:
    from playwright.sync_api import expect

    console.create_user("scan-auditor", "auditor-password-2", "auditor")
    ctx = browser.new_context(base_url=console.url, ignore_https_errors=True)
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        p = ctx.new_page()
        login(p, "scan-auditor", "auditor-password-2")
        p.goto("/policies/assurance")
        expect(p.locator("#a-name")).to_be_disabled()
        expect(p.locator("#save-assurance")).to_be_hidden()
        expect(p.locator("#add-vexc")).to_be_hidden()
        p.goto(f"/scans/view?id={seeded['rescan']}")
        expect(p.locator("#vulns-table tbody tr")).to_have_count(2)
    finally:
        ctx.close()
