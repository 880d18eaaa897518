"""The Hosts pages in Chromium at 1280 and 1920 px: the cells list with posture, filter, CSV export,
and one cell's page (verdict reasons, failed CIS rules with remediation on click, access and FIM events)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from garrison.host.cis import run_cis
from garrison.host.model import HostEvent
from tests.host.conftest import jammy_root
from tests.ui.conftest import signed_in_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def cells(console: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two cells: one compliant, one failing a required CIS rule, with access and FIM events."""
    if shutil.which("oscap") is None:
        pytest.skip("openscap-scanner not installed")
    tag = uuid.uuid4().hex[:6]
    good, bad = f"cell-ok-{tag}", f"cell-bad-{tag}"
    root = jammy_root(tmp_path_factory.mktemp("ui-cis"))
    report = run_cis(root)
    with console.api() as api:
        api.put("/hosts/policy", json={"cis": {"required_rules": ["file_permissions_etc_passwd"]}}).raise_for_status()
        api.post(f"/hosts/{good}/cis", content=report.model_dump_json(),
                 headers={"content-type": "application/json"}).raise_for_status()
        (root / "etc/passwd").chmod(0o666)
        failing = run_cis(root)
        api.post(f"/hosts/{bad}/cis", content=failing.model_dump_json(),
                 headers={"content-type": "application/json"}).raise_for_status()
        events = [
            HostEvent(type="access", action="login", severity="low", user="bosh_7f3a", source="10.0.16.5"),
            HostEvent(type="access", action="login_failed", user="root", source="198.51.100.23"),
            HostEvent(type="fim", action="modified", severity="high", path="/var/vcap/packages/rep/bin/rep",
                      pid=4242, process="/usr/bin/cp", user="root", message="rep binary modified"),
        ]
        api.post(f"/hosts/{bad}/events", json={"events": [json.loads(e.model_dump_json()) for e in events]}
                 ).raise_for_status()
    return {"good": good, "bad": bad, "tag": tag}


@pytest.fixture(scope="module", params=[1280, 1920], ids=lambda w: f"{w}px")
def page(request: pytest.FixtureRequest, browser: Any, console: Any, cells: dict[str, str]) -> Iterator[Any]:
    ctx, p, errors = signed_in_page(browser, console, request.param, TIMEOUT_MS)
    p.width = request.param  # type: ignore[attr-defined]
    yield p
    ctx.close()
    assert errors == []


def _no_overflow(page: Any, selector: str) -> None:
    box = page.evaluate(f"""() => {{ const t = document.querySelector('{selector}');
        const c = t.closest('.card'); return [t.scrollWidth, c.clientWidth, t.getBoundingClientRect().right,
        window.innerWidth]; }}""")
    assert box[2] <= box[3], f"{selector} runs off the viewport: {box}"


def test_hosts_list_filter_and_csv(page: Any, cells: dict[str, str], screenshots: Path) -> None:
    page.goto("/hosts")
    page.click("a[href='/hosts']")  # the sidebar link exists and is the active one
    assert "active" in page.get_attribute("nav a[href='/hosts']", "class")
    page.fill("#host-q", cells["tag"])
    page.wait_for_selector(f"tr[data-host='{cells['bad']}']")
    rows = page.locator("#hosts-table tbody tr")
    assert rows.count() == 2
    bad_row = page.locator(f"tr[data-host='{cells['bad']}']")
    assert "fail" in bad_row.inner_text() and "1" in bad_row.locator("td").nth(7).inner_text()
    assert "pass" in page.locator(f"tr[data-host='{cells['good']}']").inner_text()
    _no_overflow(page, "#hosts-table")
    page.select_option("#host-verdict", "fail")
    expect(page.locator("#hosts-table tbody tr")).to_have_count(1)
    page.screenshot(path=str(screenshots / f"hosts-{page.width}.png"), full_page=True)
    with page.expect_download() as dl:
        page.click("#hosts-csv")
    text = Path(dl.value.path()).read_text()
    assert text.startswith("host,verdict") and cells["bad"] in text and cells["good"] not in text


def test_cell_page_reasons_rules_and_events(page: Any, cells: dict[str, str], screenshots: Path) -> None:
    page.goto(f"/hosts/{cells['bad']}")
    page.wait_for_selector("#h-rules tbody tr")
    assert cells["bad"] in page.inner_text(".topbar h1")
    assert "file_permissions_etc_passwd" in page.inner_text("#h-reasons")
    rule = page.locator("#h-rules tbody tr", has_text="file_permissions_etc_passwd")
    rule.click()
    assert "chmod" in page.inner_text("#h-rules tr.detail")
    access = page.inner_text("#h-access")
    assert "bosh_7f3a" in access and "198.51.100.23" in access
    assert "/var/vcap/packages/rep/bin/rep" in page.inner_text("#h-events")
    assert "pid 4242" in page.inner_text("#h-events")
    _no_overflow(page, "#h-rules")
    page.screenshot(path=str(screenshots / f"host-{page.width}.png"), full_page=True)


def test_deploy_page_makes_the_cell_addon(page: Any, screenshots: Path) -> None:
    page.goto("/defenders/deploy")
    page.select_option("#deftype", "cell")
    assert page.locator("#appid").is_hidden()
    assert "Diego cell" in page.inner_text("#snippet-title")
    page.click("#generate")
    expect(page.locator("#manifest-snippet")).to_contain_text("garrison-cell")
    text = page.inner_text("#manifest-snippet")
    assert "addons:" in text and "BEGIN CERTIFICATE" in text and "bosh update-runtime-config" in page.inner_text(
        "#steps-snippet")
    box = page.evaluate("""() => { const r = document.querySelector('#manifest-snippet').getBoundingClientRect();
        return [r.right, window.innerWidth]; }""")
    assert box[0] <= box[1]
    page.screenshot(path=str(screenshots / f"deploy-cell-{page.width}.png"), full_page=True)
    page.select_option("#deftype", "app-embedded")
    assert page.locator("#appid").is_visible() and "manifest.yml" in page.inner_text("#snippet-name")
