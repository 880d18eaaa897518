"""The pages of issue 14 in Chromium at 1280 and 1920 px: a dense Runtime audits table (message visible,
details on click, column names per audit type), the Deploy page's code boxes, live updates pushed by
the server (no polling), and the Users, API tokens and CNAF rules pages.

Layout facts are measured in the page (bounding boxes, scroll widths), not eyeballed; the screenshots
(artifacts/screenshots/*-1280.png, *-1920.png) are for people.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from garrison.channel.bundle import decode_bundle
from garrison.channel.client import DefenderChannelClient
from garrison.channel.protocol import Hello
from garrison.policy.audit import AuditEvent

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TIMEOUT_MS = 20_000
APP = "pages-shop"
WIDTHS = [1280, 1920]
LONG_MESSAGE = "exec of /usr/bin/curl refused by rule pages-rule: " + "the process tried again " * 12
CLIENT_IP = "10.9.8.7"


def _client(console: Any, tmp: Path, app: str, instance: int = 0) -> DefenderChannelClient:
    return DefenderChannelClient(
        decode_bundle(console.install_bundle()),
        tmp,
        Hello(app_id=f"{app}-id", app_name=app, org="acme", space="prod", instance=instance, version="ui"),
    )


@pytest.fixture(scope="module")
def defender(console: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DefenderChannelClient]:
    client = _client(console, tmp_path_factory.mktemp("defender"), APP)
    client.start()
    assert client.wait_connected(30), client.last_error
    now = time.time()
    events = [
        AuditEvent(
            type="process", effect="prevent", severity="high", app_name=APP, org="acme", space="prod",
            rule="pages-rule", control="processes.deny", pid=4000 + i, exe="/usr/bin/curl",
            argv=["curl", "-s", "https://downloads.example.com/" + "x" * 200], message=f"#{i} {LONG_MESSAGE}",
            time=now - 60 + i,
        )
        for i in range(40)
    ]  # fmt: skip
    events += [
        AuditEvent(
            type="cnaf", effect="prevent", app_name=APP, rule="pages-rule", control="cmdi", dest_ip=CLIENT_IP,
            protocol="http", message="CNAF: command injection in query parameter 'cmd'",
            extra={"attack": "cmdi", "client_ip": CLIENT_IP, "request_line": "GET /run?cmd=sh+-c+id HTTP/1.1"},
            time=now,
        ),
        AuditEvent(
            type="network", effect="alert", app_name=APP, rule="pages-rule", control="network.outbound.deny",
            exe="/usr/bin/python3", dest_ip="10.1.2.3", dest_port=5432, protocol="tcp",
            message="connect to 10.1.2.3:5432 denied", time=now + 0.01,
        ),
        AuditEvent(
            type="dns", effect="prevent", app_name=APP, rule="pages-rule", control="dns.deny",
            exe="/usr/bin/python3", dest_name="c2.evil.example", message="DNS query for c2.evil.example refused",
            time=now + 0.02,
        ),
    ]  # fmt: skip
    client.submit_many(events)
    with console.api() as api:
        deadline = time.monotonic() + 30
        while api.get("/audits/runtime/app-embedded", params={"app": APP}).headers["total-count"] != "43":
            assert time.monotonic() < deadline, "the seeded audits did not reach the console"
            time.sleep(0.2)
    yield client
    client.stop()


def _login(p: Any, user: str, password: str) -> None:
    p.goto("/login")
    p.fill("#username", user)
    p.fill("#password", password)
    p.click("button[type=submit]")
    p.wait_for_url("**/dashboard")
    p.wait_for_selector("#user-badge .pill")


@pytest.fixture(scope="module", params=WIDTHS, ids=lambda w: f"{w}px")
def page(request: pytest.FixtureRequest, browser: Any, console: Any, defender: Any) -> Iterator[Any]:
    ctx = browser.new_context(
        base_url=console.url,
        ignore_https_errors=True,
        accept_downloads=True,
        viewport={"width": request.param, "height": 900},
    )
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.grant_permissions(["clipboard-read", "clipboard-write"])
    p = ctx.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    _login(p, console.admin_user, console.admin_password)
    p.width = request.param  # type: ignore[attr-defined]
    yield p
    ctx.close()
    assert not errors, errors


def shot(p: Any, screenshots: Path, name: str) -> None:
    p.wait_for_timeout(200)  # the last render settles; nothing asserted depends on it
    p.screenshot(path=str(screenshots / f"{name}-{p.width}.png"))


def box(p: Any, selector: str) -> dict[str, float]:
    b = p.locator(selector).first.bounding_box()
    assert b is not None, f"{selector} is not rendered"
    return dict(b)


def no_page_overflow(p: Any) -> None:
    widths = p.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}"


# -- Runtime audits --------------------------------------------------------------------------------


def test_audits_table_is_dense_and_fits(page: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    page.goto(f"/audits?app={APP}")
    expect(
        page.locator("#audits-table tbody tr.audit", has_text="#0 exec")
    ).to_be_visible()  # 43 seeded + pushed
    no_page_overflow(page)
    table, card = box(page, "#audits-table"), box(page, "#audits-table >> xpath=..")
    assert table["x"] + table["width"] <= card["x"] + card["width"] + 1, (table, card)
    assert page.evaluate("() => document.querySelector('#audits-table').scrollWidth") <= card["width"] + 1
    # the Message column is on screen and wide enough to read
    msg = box(page, "#audits-table thead th:last-child")
    assert msg["x"] + msg["width"] <= page.width, msg
    assert msg["width"] >= (250 if page.width == 1280 else 400), msg
    # one line per audit, even with a 300-character message and a long command line
    heights = [r["height"] for r in page.evaluate(
        "() => [...document.querySelectorAll('#audits-table tr.audit')].map(r => r.getBoundingClientRect())"
        ".map(b => ({height: b.height}))"
    )]  # fmt: skip
    assert all(28 <= h <= 46 for h in heights), heights
    shot(page, screenshots, "audits-dense")


def test_audit_details_on_row_click(page: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    page.goto(f"/audits?app={APP}")
    expect(page.locator("#audits-table tr.audit").first).to_be_visible()
    row = page.locator("#audits-table tr.audit", has_text="#39 exec")
    row.click()
    details = page.locator("#audits-table tr.audit-details")
    expect(details).to_have_count(1)
    expect(details).to_contain_text(LONG_MESSAGE.strip())  # the whole message, wrapped
    expect(details).to_contain_text("acme / prod")
    expect(details).to_contain_text("pid 4039")
    expect(row).to_have_attribute("aria-expanded", "true")
    d = box(page, "#audits-table tr.audit-details")
    assert d["x"] + d["width"] <= page.width
    no_page_overflow(page)
    shot(page, screenshots, "audits-details")
    row.click()
    expect(details).to_have_count(0)
    # the keyboard works too
    row.focus()
    page.keyboard.press("Enter")
    expect(details).to_have_count(1)


def test_audit_columns_named_per_type(page: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    page.goto(f"/audits?app={APP}")
    expect(page.locator("#audits-table tr.audit").first).to_be_visible()
    # mixed types: each value says what it is; a CNAF client IP is never called a destination
    cnaf = page.locator("#audits-table tr.audit[data-type=cnaf]")
    expect(cnaf.locator("td.ctx-b")).to_have_text(f"client{CLIENT_IP}")
    expect(page.locator("#audits-table tr.audit[data-type=network] td.ctx-b")).to_contain_text(
        "to10.1.2.3:5432"
    )
    expect(
        page.locator("#audits-table tr.audit[data-type=dns]", has_text="c2.evil").locator("td.ctx-b")
    ).to_contain_text("namec2.evil.example")
    for kind, a, b in (
        ("cnaf", "Request", "Client IP"),
        ("network", "Process", "Destination"),
        ("dns", "Process", "Name queried"),
        ("process", "Process", "Command line"),
    ):
        page.select_option("select[name=type]", kind)
        page.click("#audit-filters button[type=submit]")
        expect(page.locator("#col-a")).to_have_text(a)
        expect(page.locator("#col-b")).to_have_text(b)
        if kind == "cnaf":
            expect(page.locator("#audits-table tr.audit")).to_have_count(1)
            expect(page.locator("#audits-table tr.audit td.ctx-b")).to_have_text(CLIENT_IP)
            expect(page.locator("#audits-table tr.audit td.ctx-a")).to_have_text(
                "GET /run?cmd=sh+-c+id HTTP/1.1"
            )
            shot(page, screenshots, "audits-cnaf")


def test_audits_arrive_by_server_push(page: Any, defender: DefenderChannelClient) -> None:
    """New audits are pushed over the SSE stream: no list request is made while waiting for them."""
    from playwright.sync_api import expect

    page.goto(f"/audits?app={APP}")
    expect(page.locator("#audits-table tr.audit").first).to_be_visible()
    expect(page.locator("#live-indicator")).to_have_text("Live")
    page.wait_for_timeout(500)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    marker = page.evaluate("() => (window.__marker = Math.random())")
    text = f"pushed-{page.width}-{time.time()}"
    defender.submit_many(
        [AuditEvent(type="process", effect="alert", app_name=APP, exe="/bin/ls", message=text)]
    )
    expect(page.locator("#audits-table tr.audit.fresh", has_text=text)).to_be_visible()
    expect(page.locator("#audits-table tr.audit").first).to_contain_text(text)
    assert page.evaluate("() => window.__marker") == marker
    listed = [u for u in requests if "/api/v1/audits/runtime/app-embedded?" in u or "/stream" in u]
    assert listed == [], f"the page asked instead of being told: {listed}"
    # another app's audit does not match the filter and is not pushed into this table
    defender.submit_many(
        [AuditEvent(type="process", effect="alert", app_name="other-app", message="not-mine")]
    )
    page.wait_for_timeout(1500)
    expect(page.locator("#audits-table tr.audit", has_text="not-mine")).to_have_count(0)


# -- Dashboard --------------------------------------------------------------------------------------


def test_dashboard_updates_by_server_push(
    page: Any, console: Any, defender: DefenderChannelClient, tmp_path: Path, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    page.goto("/dashboard")
    expect(page.locator("#live-indicator")).to_have_text("Live")
    expect(page.locator("#stat-connected")).not_to_have_text("\u2013")
    expect(page.locator("#stat-audits")).not_to_have_text("\u2013")
    before = int(page.locator("#stat-audits").inner_text())
    connected = int(page.locator("#stat-connected").inner_text())
    page.wait_for_timeout(300)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    text = f"dash-{page.width}-{time.time()}"
    defender.submit_many([AuditEvent(type="dns", effect="prevent", app_name=APP, message=text)])
    expect(page.locator("#feed li", has_text=text)).to_be_visible()
    expect(page.locator("#stat-audits")).to_have_text(str(before + 1))
    second = _client(console, tmp_path, f"{APP}-2", instance=1)
    second.start()
    try:
        assert second.wait_connected(30), second.last_error
        expect(page.locator("#stat-connected")).to_have_text(str(connected + 1))
    finally:
        second.stop()
    assert not [u for u in requests if "/api/v1/" in u], requests
    no_page_overflow(page)
    shot(page, screenshots, "dashboard-live")


# -- Deploy -----------------------------------------------------------------------------------------


def test_deploy_code_boxes_fit(page: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    page.goto("/defenders/deploy")
    page.fill("#consoleaddr", "console.apps.internal.example.com")
    page.fill("#appid", "shop")
    page.click("#generate")
    expect(page.locator("#manifest-snippet")).to_contain_text("INSTALL_BUNDLE: ey")
    no_page_overflow(page)
    for code in ("#manifest-snippet", "#steps-snippet"):
        sizes = page.evaluate(
            f"() => {{ const e = document.querySelector('{code}'); return [e.scrollWidth, e.clientWidth]; }}"
        )
        assert sizes[0] <= sizes[1], f"{code} is wider than its box: {sizes}"
        b, card = box(page, code), box(page, f"{code} >> xpath=ancestor::div[contains(@class,'card')]")
        assert b["x"] + b["width"] <= card["x"] + card["width"], (code, b, card)
        # the Copy button sits in the box's header, not over the code
        btn = box(page, f"button[data-copy={code[1:]}]")
        assert btn["y"] + btn["height"] <= b["y"] + 1
    # every line of the install command is readable in the box
    steps = page.locator("#steps-snippet").inner_text()
    assert "--install-bundle @install_bundle.txt" in steps
    hint = page.locator("#deploy-form .hint").first
    assert hint.evaluate("e => e.scrollWidth <= e.clientWidth && e.scrollHeight <= e.clientHeight + 1")
    expect(hint).to_contain_text("wss://this-address:8084")
    # the sidebar highlights Deploy, not Defenders
    expect(page.locator(".sidebar nav a.active")).to_have_count(1)
    expect(page.locator(".sidebar nav a.active")).to_have_text("Deploy")
    shot(page, screenshots, "deploy")
    for name in ("manifest-snippet", "steps-snippet"):
        page.locator(f"button[data-copy={name}]").click()
        expect(page.locator("#toast")).to_have_text("Copied to the clipboard")
        assert page.evaluate("() => navigator.clipboard.readText()") == page.locator(f"#{name}").inner_text()


# -- Users and API tokens ----------------------------------------------------------------------------


def test_users_page(page: Any, console: Any, browser: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    user = f"ops-{page.width}"
    page.goto("/users")
    expect(page.locator("#users-table tr[data-user=admin]")).to_be_visible()
    page.fill("#new-username", user)
    page.fill("#new-password", "short")
    page.select_option("#new-role", "operator")
    page.click("#add-user")
    expect(page.locator("#user-form .field-error")).to_contain_text("at least 8 characters")
    page.fill("#new-password", "operator-password-1")
    page.click("#add-user")
    row = page.locator(f"#users-table tr[data-user='{user}']")
    expect(row).to_be_visible()
    with console.api() as api:
        assert {"username": user, "role": "operator"}.items() <= next(
            u for u in api.get("/users").json() if u["username"] == user
        ).items()
    no_page_overflow(page)
    shot(page, screenshots, "users")
    # change the role
    row.locator("select").select_option("auditor")
    expect(page.locator("#toast")).to_contain_text(f"{user} is now auditor")
    with console.api() as api:
        assert next(u for u in api.get("/users").json() if u["username"] == user)["role"] == "auditor"
    # set a new password: the old one stops working, the new one works
    row.get_by_role("button", name="Set password").click()
    page.fill("#reset-password", "brand-new-password-2")
    page.click("#password-apply")
    expect(page.locator("#password-dialog")).to_be_hidden()
    with console.api(user, "brand-new-password-2") as api:
        assert api.get("/tokens").status_code == 200
    with console.api(user, "operator-password-1") as api:
        assert api.get("/tokens").status_code == 401
    # the last admin cannot be deleted: the API's message is shown
    page.once("dialog", lambda d: d.accept())
    page.locator("#users-table tr[data-user=admin]").get_by_role("button", name="Delete admin").click()
    expect(page.locator("#toast")).to_contain_text("last admin")
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name=f"Delete {user}").click()
    expect(row).to_have_count(0)
    # a non-admin sees why there is no table
    console.create_user(f"aud-{page.width}", "auditor-password-1", "auditor")
    ctx = browser.new_context(
        base_url=console.url, ignore_https_errors=True, viewport={"width": page.width, "height": 900}
    )
    try:
        p = ctx.new_page()
        _login(p, f"aud-{page.width}", "auditor-password-1")
        p.goto("/users")
        expect(p.locator(".notice.non-admin-only")).to_be_visible()
        expect(p.locator("#users-table")).to_be_hidden()
        expect(p.locator(".sidebar a[href='/users']")).to_be_visible()
    finally:
        ctx.close()


def test_tokens_page(page: Any, console: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    name = f"ci-{page.width}"
    page.goto("/tokens")
    expect(page.locator("#token-role")).to_have_text("admin")
    page.fill("#token-name", name)
    page.select_option("#token-ttl", "30")
    page.click("#create-token")
    expect(page.locator("#new-token")).to_be_visible()
    token = page.locator("#new-token-value").inner_text().strip()
    assert token.startswith("gar_")
    row = page.locator("#tokens-table tbody tr", has_text=name)
    expect(row).to_be_visible()
    with console.api(token=token) as api:
        assert api.get("/defenders/summary").status_code == 200
    no_page_overflow(page)
    shot(page, screenshots, "tokens")
    page.locator("#new-token button.copy").click()
    assert page.evaluate("() => navigator.clipboard.readText()") == token
    # an empty name: the API's 422 is shown on the field, nothing is created
    page.fill("#token-name", "")
    page.click("#create-token")
    expect(page.locator("#token-form .field-error")).to_be_visible()
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(row).to_have_count(0)
    with console.api(token=token) as api:
        assert api.get("/defenders/summary").status_code == 401


# -- CNAF rules -------------------------------------------------------------------------------------


def test_cnaf_rules_page(page: Any, console: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    rule = f"web-{page.width}"
    policy = console.policy()
    console.put_policy({"rules": [{"name": rule, "scope": {"apps": ["shop-*"]}}, *policy["rules"]]})
    page.goto("/policies/cnaf")
    row = page.locator(f"#cnaf-table tr[data-rule='{rule}']")
    expect(row).to_contain_text("not configured")
    row.get_by_role("button", name=f"Edit CNAF of {rule}").click()
    dialog = page.locator("#cnaf-dialog")
    expect(dialog).to_be_visible()
    page.select_option("select[data-effect=sqli]", "ban")
    page.select_option("select[data-effect=cmdi]", "prevent")
    page.click("#add-exception")
    page.locator("#exceptions-table tbody tr").last.locator("[data-k=path]").fill("/search")
    page.locator("#exceptions-table tbody tr").last.locator("[data-k=param]").fill("q")
    page.locator("#exceptions-table tbody tr").last.locator("[data-k=attack]").select_option("sqli")
    page.check("#rate-enabled")
    page.select_option("#crs-paranoia", "2")
    page.fill("#crs-disabled", "942100, 941100")
    page.fill("#rate-burst", "0")
    page.click("#cnaf-apply")
    expect(dialog.locator(".field-error")).to_contain_text("greater than or equal to 1")  # the API's 422
    assert next(r for r in console.policy()["rules"] if r["name"] == rule).get("cnaf") is None
    shot(page, screenshots, "cnaf-validation")
    page.fill("#rate-burst", "40")
    page.fill("#rate-average", "20")
    page.click("#cnaf-apply")
    expect(dialog).to_be_hidden()
    expect(row).to_contain_text("enabled")
    cnaf = next(r for r in console.policy()["rules"] if r["name"] == rule)["cnaf"]
    assert cnaf["enabled"] is True
    assert cnaf["effects"]["sqli"] == "ban" and cnaf["effects"]["cmdi"] == "prevent"
    assert cnaf["effects"]["xss"] == "alert"
    assert cnaf["exceptions"] == [{"path": "/search", "param": "q", "attack": "sqli"}]
    assert cnaf["rate_limit"] == {"burst": 40, "average": 20, "effect": "prevent"}
    assert cnaf["crs"]["paranoia_level"] == 2 and cnaf["crs"]["disabled_rules"] == [942100, 941100]
    assert cnaf["crs"]["enabled"] is True and cnaf["crs"]["anomaly_threshold"] == 5
    no_page_overflow(page)
    shot(page, screenshots, "cnaf")
    # edit again: the stored values come back; then remove the CNAF from the rule
    row.get_by_role("button", name=f"Edit CNAF of {rule}").click()
    expect(page.locator("select[data-effect=sqli]")).to_have_value("ban")
    expect(page.locator("#exceptions-table [data-k=path]")).to_have_value("/search")
    expect(page.locator("#crs-paranoia")).to_have_value("2")
    page.once("dialog", lambda d: d.accept())
    page.click("#cnaf-remove")
    expect(dialog).to_be_hidden()
    expect(row).to_contain_text("not configured")
    assert next(r for r in console.policy()["rules"] if r["name"] == rule)["cnaf"] is None


def test_stream_refuses_bad_input(console: Any) -> None:
    """The SSE endpoint validates like the list endpoint (422/401) before it starts streaming."""
    with httpx.Client(base_url=console.url + "/api/v1", verify=console.ssl_context(), timeout=10) as c:
        assert c.get("/audits/runtime/app-embedded/stream").status_code == 401
    with console.api() as api:
        for params in ({"type": "nope"}, {"from": "yesterday"}, {"after": "-1"}, {"app": "x" * 300}):
            assert api.get("/audits/runtime/app-embedded/stream", params=params).status_code == 422, params
