"""The web UI in a real browser against a real console: log in, create a rule (with an inline 422),
see a defender appear and an audit arrive without reloading, download the install bundle and the
defender tarball, export CSV, and check that an auditor sees no edit controls.

Screenshots of the main pages go to artifacts/screenshots/.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from garrison.channel.bundle import decode_bundle
from garrison.channel.client import DefenderChannelClient
from garrison.channel.protocol import Hello
from garrison.policy.audit import AuditEvent

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TIMEOUT_MS = 20_000
APP = "ui-shop"


@pytest.fixture(scope="module")
def context(browser: Any, console: Any) -> Iterator[Any]:
    ctx = browser.new_context(
        base_url=console.url,
        ignore_https_errors=True,
        accept_downloads=True,
        viewport={"width": 1440, "height": 900},
    )
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def page(context: Any, console: Any) -> Any:
    """A signed-in admin page (the login itself is tested below)."""
    p = context.new_page()
    login(p, console.admin_user, console.admin_password)
    return p


@pytest.fixture(scope="module")
def defender(console: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DefenderChannelClient]:
    """A real channel client (the defender's own), enrolled with a bundle from the console."""
    client = DefenderChannelClient(
        decode_bundle(console.install_bundle()),
        tmp_path_factory.mktemp("defender"),
        Hello(app_id=f"{APP}-id", app_name=APP, org="acme", space="prod", instance=0, version="ui-test"),
    )
    yield client
    client.stop()


def login(p: Any, user: str, password: str) -> None:
    p.goto("/login")
    p.fill("#username", user)
    p.fill("#password", password)
    p.click("button[type=submit]")
    p.wait_for_url("**/dashboard")
    p.wait_for_selector("#user-badge .pill")


def shot(p: Any, screenshots: Path, name: str) -> None:
    p.wait_for_timeout(300)  # let the last render settle (screenshot only, no assertion depends on it)
    p.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def test_login(context: Any, console: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    p = context.new_page()
    p.goto("/dashboard")
    p.wait_for_url("**/login?next=*")  # not signed in: sent to the login page
    p.fill("#username", console.admin_user)
    p.fill("#password", "wrong-password")
    p.click("button[type=submit]")
    expect(p.locator("#login-error")).to_have_text("Wrong username or password.")
    shot(p, screenshots, "login-error")
    p.fill("#password", console.admin_password)
    p.click("button[type=submit]")
    p.wait_for_url("**/dashboard")
    expect(p.locator("#user-badge")).to_contain_text("admin")
    p.close()


def test_empty_states(page: Any, screenshots: Path) -> None:
    """A fresh console explains what to do next instead of showing empty tables."""
    from playwright.sync_api import expect

    page.goto("/defenders")
    expect(page.locator("#defenders-empty")).to_be_visible()
    expect(page.locator("#defenders-empty")).to_contain_text("No defenders yet")
    shot(page, screenshots, "defenders-empty")
    page.goto("/dashboard")
    expect(page.locator("#feed-empty")).to_be_visible()
    expect(page.locator("#stat-connected")).to_have_text("0")
    shot(page, screenshots, "dashboard-empty")
    page.goto("/policies/runtime")
    expect(page.locator("#rules-empty")).to_be_visible()


def test_create_rule_with_inline_validation(page: Any, console: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    page.goto("/policies/runtime")
    page.click("#add-rule")
    dialog = page.locator("#rule-dialog")
    expect(dialog).to_be_visible()
    page.fill("[data-path=name]", "ui-deny-shell")
    page.fill("[data-path='scope.apps']", f"{APP}\nui-*")
    page.select_option("[data-path='processes.effect']", "prevent")
    page.fill("[data-path='processes.deny']", "/bin/sh\n/usr/bin/curl")
    page.select_option("[data-path='network.effect']", "prevent")
    page.fill("[data-path='network.outbound.deny']", "10.0.0.300")
    page.click("#rule-apply")
    err = dialog.locator(".field-error")
    expect(err).to_contain_text("invalid IP address or CIDR")  # the API's 422, shown on the field
    expect(page.locator("[data-path='network.outbound.deny']")).to_have_class("invalid")
    shot(page, screenshots, "policy-validation")
    assert console.policy()["rules"] == [] or all(
        r["name"] != "ui-deny-shell" for r in console.policy()["rules"]
    )

    page.fill("[data-path='network.outbound.deny']", "10.0.0.0/8\n0.0.0.0/0:25")
    page.click("#rule-apply")
    expect(dialog).to_be_hidden()
    expect(page.locator("tr[data-rule='ui-deny-shell']")).to_be_visible()
    stored = next(r for r in console.policy()["rules"] if r["name"] == "ui-deny-shell")
    assert stored["processes"] == {
        "effect": "prevent", "allow": [], "deny": ["/bin/sh", "/usr/bin/curl"],
        "drift_prevention": False, "fork_bomb_guard": None,
    }  # fmt: skip
    assert [t["cidr"] for t in stored["network"]["outbound"]["deny"]] == ["10.0.0.0/8", "0.0.0.0/0"]
    assert stored["scope"]["apps"] == [APP, "ui-*"]

    # a second rule, then reorder: the order is the evaluation order
    page.click("#add-rule")
    page.fill("[data-path=name]", "ui-catch-all")
    page.click("#rule-apply")
    expect(page.locator("tr[data-rule='ui-catch-all']")).to_be_visible()
    names = lambda: [r["name"] for r in console.policy()["rules"]]  # noqa: E731
    assert names().index("ui-catch-all") < names().index("ui-deny-shell")
    page.click("button[aria-label='Move ui-catch-all down']")
    expect(page.locator("#rules-table tbody tr").nth(0)).to_have_attribute("data-rule", "ui-deny-shell")
    assert names().index("ui-deny-shell") < names().index("ui-catch-all")
    shot(page, screenshots, "policy")

    # edit, then delete
    page.locator("tr[data-rule='ui-catch-all']").get_by_role("button", name="Edit").click()
    page.check("[data-path=disabled]")
    page.click("#rule-apply")
    expect(page.locator("tr[data-rule='ui-catch-all']")).to_have_class("disabled-rule")
    page.once("dialog", lambda d: d.accept())
    page.locator("tr[data-rule='ui-catch-all']").get_by_role("button", name="Delete").click()
    expect(page.locator("tr[data-rule='ui-catch-all']")).to_have_count(0)
    assert "ui-catch-all" not in names()


def test_defender_appears_without_reload(
    page: Any, defender: DefenderChannelClient, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    page.goto("/defenders")
    marker = page.evaluate("() => (window.__marker = Math.random())")
    defender.start()
    assert defender.wait_connected(30), defender.last_error
    row = page.locator("#defenders-table tbody tr", has_text=APP)
    expect(row).to_be_visible()
    expect(row).to_contain_text("connected")
    expect(row).to_contain_text("acme / prod")
    assert page.evaluate("() => window.__marker") == marker  # same document: no reload happened
    shot(page, screenshots, "defenders")


def test_audit_arrives_live(page: Any, defender: DefenderChannelClient, screenshots: Path) -> None:
    from playwright.sync_api import expect

    page.goto("/audits")
    expect(page.locator("#audits-table")).to_be_attached()
    marker = page.evaluate("() => (window.__marker = Math.random())")
    now = time.time()
    defender.submit_many(
        [
            AuditEvent(
                type="process", effect="prevent", severity="high", app_name=APP, org="acme", space="prod",
                rule="ui-deny-shell", control="processes.deny", pid=4242, exe="/bin/sh", argv=["sh", "-c", "id"],
                message="ui-test: /bin/sh denied by rule ui-deny-shell", time=now,
            ),
            AuditEvent(
                type="network", effect="alert", app_name=APP, rule="ui-deny-shell", control="network.outbound.deny",
                dest_ip="10.1.2.3", dest_port=5432, protocol="tcp", message="ui-test: connect to 10.1.2.3:5432",
                time=now + 0.001,
            ),
        ]
    )  # fmt: skip
    row = page.locator("#audits-table tbody tr", has_text="ui-test: /bin/sh denied")
    expect(row).to_be_visible()
    expect(row).to_contain_text("prevent")
    expect(page.locator("#audits-table tbody tr", has_text="10.1.2.3:5432")).to_be_visible()
    assert page.evaluate("() => window.__marker") == marker
    shot(page, screenshots, "audits")

    # filters narrow the table
    page.select_option("select[name=type]", "network")
    page.click("#audit-filters button[type=submit]")
    expect(page.locator("#audits-table tbody tr", has_text="ui-test: /bin/sh denied")).to_have_count(0)
    expect(page.locator("#audits-table tbody tr", has_text="10.1.2.3:5432")).to_be_visible()

    # CSV export of what is filtered
    with page.expect_download() as dl:
        page.click("#csv-export")
    text = Path(dl.value.path()).read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert any("10.1.2.3" in json.dumps(r) for r in rows)
    assert not any("/bin/sh denied" in json.dumps(r) for r in rows)

    page.goto("/dashboard")
    expect(page.locator("#feed li", has_text="ui-test: /bin/sh denied")).to_be_visible()
    expect(page.locator("#chart svg rect").first).to_be_attached()
    expect(page.locator("#stat-connected")).not_to_have_text("0")
    shot(page, screenshots, "dashboard")

    page.goto("/incidents")
    expect(page.locator("#incidents-table tbody tr", has_text=APP).first).to_be_visible()
    shot(page, screenshots, "incidents")


def test_deploy_page_and_downloads(page: Any, console: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    page.goto("/defenders/deploy")
    page.fill("#consoleaddr", "console.example.internal")
    page.fill("#appid", "shop")
    page.click("#generate")
    snippet = page.locator("#manifest-snippet")
    expect(snippet).to_contain_text("INSTALL_BUNDLE: ey")
    expect(snippet).to_contain_text("WS_ADDRESS: wss://console.example.internal:")
    expect(snippet).to_contain_text("DEFENDER_APP_ID: shop")
    text = snippet.inner_text()
    bundle_text = text.split("INSTALL_BUNDLE: ", 1)[1].split()[0]
    assert '"' not in text.split("env:")[1]  # values without quotes, as CF docs show them
    shot(page, screenshots, "deploy")

    with page.expect_download() as dl:
        page.click("#dl-bundle")
    assert dl.value.suggested_filename == "install_bundle.txt"
    downloaded = Path(dl.value.path()).read_text().strip()
    assert downloaded == bundle_text
    assert decode_bundle(downloaded).ws_address.startswith("wss://console.example.internal:")
    assert json.loads(base64.b64decode(downloaded))["ca_pem"] == console.ca_pem

    with page.expect_download() as dl:
        page.click("#dl-tarball")
    assert dl.value.suggested_filename == "garrison_defender_app_embedded.tar.gz"
    with tarfile.open(dl.value.path()) as tf:
        names = [m.name.removeprefix("./") for m in tf.getmembers()]
    assert "defender" in names

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.locator("button[data-copy=manifest-snippet]").click()
    expect(page.locator("#toast")).to_have_text("Copied to the clipboard")
    assert page.evaluate("() => navigator.clipboard.readText()") == text


def test_auditor_sees_no_edit_controls(browser: Any, console: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    console.create_user("ui-auditor", "auditor-password-1", "auditor")
    ctx = browser.new_context(
        base_url=console.url, ignore_https_errors=True, viewport={"width": 1440, "height": 900}
    )
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        p = ctx.new_page()
        login(p, "ui-auditor", "auditor-password-1")
        expect(p.locator("#user-badge")).to_contain_text("auditor")
        p.goto("/policies/runtime")
        expect(p.locator("tr[data-rule='ui-deny-shell']")).to_be_visible()
        expect(p.locator("#add-rule")).to_be_hidden()
        assert p.get_by_role("button", name="Edit").filter(visible=True).count() == 0
        assert p.get_by_role("button", name="Delete").filter(visible=True).count() == 0
        shot(p, screenshots, "policy-auditor")
        p.goto("/defenders/deploy")
        expect(p.locator("#generate")).to_be_hidden()
        expect(p.locator(".notice.auditor-only")).to_be_visible()
        p.goto("/defenders")
        expect(p.locator("#defenders-table tbody tr", has_text=APP)).to_be_visible()
        assert p.get_by_role("button", name="Remove").filter(visible=True).count() == 0
    finally:
        ctx.close()


def test_unknown_page_and_static_guard(console: Any) -> None:
    import ssl

    import httpx

    verify = ssl.create_default_context(cafile=str(console.ca_path))
    with httpx.Client(base_url=console.url, verify=verify) as c:
        assert c.get("/ui/static/app.js").status_code == 200
        assert c.get("/ui/static/..%2Fapp.js").status_code == 404
        assert c.get("/ui/static/routes.py").status_code == 404
        assert c.get("/ui/session").status_code == 401
        r = c.get("/dashboard")
        assert r.status_code == 200 and "default-src 'self'" in r.headers["content-security-policy"]
