"""Issue 17 in the browser: the network discovery map, the learning pages and review → accept →
enforce, in Chromium against a real console whose profiles come from `profile` reports sent over the
real defender channel (tests/ui/discovery_data.py).

The estate: acme/prod/frontend calls acme/prod/billing (by billing's instance address), the DNS name
api.example.org and the external host 198.51.100.7; acme/dev/worker calls 198.51.100.7 too. The
frontend learns (started from the Learning page), its proposed rule is accepted on the review page,
then it reaches a new host (new since accept, and alerted on by the accepted rule) which is allowed
from the map; an edge of the worker is denied from the map; the frontend's rule is enforced."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.ui import test_browser
from tests.ui.discovery_data import AppReport, seen, send_reports
from tests.ui.test_browser import shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]
context, page = test_browser.context, test_browser.page  # the same signed-in page fixtures
SFX = uuid.uuid4().hex[:6]
ORG = f"acme-{SFX}"
FRONT, BILLING, WORKER = "frontend", "billing", "worker"
T0 = time.time() - 600


def node(space: str, app: str) -> str:
    return f"app:{ORG}/{space}/{app}"


def _frontend(extra: list[dict[str, Any]] | None = None) -> AppReport:
    return AppReport(ORG, "prod", FRONT, fields={
        "addresses": ["10.250.0.1"],
        "processes": [seen(T0, exe="/usr/bin/python3", argv_shape=["app.py"], parent="/bin/sh")],
        "destinations": [
            seen(T0, ip="10.250.0.2", port=8080),
            seen(T0, ip="203.0.113.10", port=443, names=["api.example.org"]),
            seen(T0, ip="198.51.100.7", port=25),
            *(extra or []),
        ],
        "dns": [seen(T0, name="api.example.org")],
        "listening": [seen(T0, port=8080)],
    })  # fmt: skip


@pytest.fixture(scope="module")
def estate(console: Any) -> None:
    send_reports(console, [
        AppReport(ORG, "prod", BILLING, fields={"addresses": ["10.250.0.2"], "listening": [seen(T0, port=8080)]}),
        AppReport(ORG, "dev", WORKER, fields={"addresses": ["10.250.0.3"],
                                              "destinations": [seen(T0, ip="198.51.100.7", port=25),
                                                               seen(T0, ip="2001:db8::7", port=443)]}),
    ])  # fmt: skip


def _map_ready(page: Any, edges_at_least: int = 1) -> None:
    page.wait_for_function(
        "n => Number(document.querySelector('#map').dataset.edges || 0) >= n", arg=edges_at_least
    )


def _click_edge(page: Any, src: str, dst: str, *, add: bool = False) -> None:
    """A real click on the drawn edge, at a point of it where no other edge lies on top."""
    sel = f'#map path.hit[data-src="{src}"][data-dst="{dst}"]'
    page.wait_for_selector(sel, state="attached")
    x, y = page.eval_on_selector(
        sel,
        """p => { const len = p.getTotalLength();
                  for (const f of [0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8, 0.15, 0.85, 0.1, 0.9]) {
                    const m = p.getPointAtLength(len * f);
                    const pt = p.ownerSVGElement.createSVGPoint(); pt.x = m.x; pt.y = m.y;
                    const s = pt.matrixTransform(p.getScreenCTM());
                    if (document.elementFromPoint(s.x, s.y) === p) return [s.x, s.y];
                  }
                  throw new Error("the edge is covered everywhere"); }""",
    )
    if add:
        page.keyboard.down("Shift")
    page.mouse.click(x, y)
    if add:
        page.keyboard.up("Shift")


def _edge(page: Any, src: str, dst: str) -> Any:
    return page.locator(f'#map path.edge[data-src="{src}"][data-dst="{dst}"]')


def test_learning_review_accept_map_rules_enforce(
    page: Any, console: Any, estate: None, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    # 1. start learning for the frontend on the Learning page; its defender reports what it saw
    page.goto("/learning")
    page.fill("#learn-form [name=org]", ORG)
    page.fill("#learn-form [name=space]", "prod")
    page.fill("#learn-form [name=app]", FRONT)
    page.select_option("#learn-form [name=auto_accept]", "stable")
    page.click("#learn-form button[type=submit]")
    row = page.locator("#profiles-table tbody tr", has_text=FRONT).filter(has_text=ORG)
    expect(row).to_have_count(1)
    expect(row.locator(".pill").first).to_have_text("learning")
    send_reports(console, [_frontend()])
    page.reload()  # (the list also refreshes itself every 5 s)
    page.fill("#prof-q", ORG)
    expect(row.locator("td").nth(5)).to_contain_text("3 destinations")
    # the list shows each profile's auto-accept, and an operator changes it there (audited)
    choice = row.locator("select.auto-accept")
    expect(choice).to_have_value("stable")
    choice.select_option("window")
    expect(page.locator("#toast")).to_contain_text("auto-accept when the window ends")
    expect(row.locator("select.auto-accept")).to_have_value("window")  # as the console now has it
    with console.api() as c:
        (listed,) = [x for x in c.get("/profiles", params={"org": ORG, "app": FRONT}).json()]
    assert listed["auto_accept"] == "window"
    shot(page, screenshots, "learning")

    # 2. review: what was seen, the proposed rule and its diff; accept in alert mode
    row.locator("a", has_text=FRONT).click()
    page.wait_for_url("**/learning/review?id=*")
    expect(page.locator("#review-title")).to_have_text(f"{ORG} / prod / {FRONT}")
    expect(page.locator("#destinations-table tbody tr")).to_have_count(3)
    expect(page.locator("#destinations-table")).to_contain_text(BILLING)  # a service identity, not a bare IP
    expect(page.locator("#destinations-table")).to_contain_text("api.example.org")
    expect(page.locator("#processes-table")).to_contain_text("/usr/bin/python3")
    expect(page.locator("#diff-table tbody tr").first).to_be_visible()
    expect(page.locator("#diff-table")).to_contain_text("api.example.org")
    expect(page.locator('#diff-table tr[data-path="network.outbound.allow"] .add')).to_contain_text(
        ["10.250.0.2/32 8080/tcp"]
    )
    expect(page.locator("#rule-proposed")).to_contain_text('"effect": "alert"')
    expect(page.locator("#enforce")).to_be_disabled()
    expect(page.locator("#auto-accept")).to_have_value("window")  # as chosen on the list
    page.select_option("#auto-accept", "off")  # the operator reviews it instead (audited)
    expect(page.locator("#toast")).to_contain_text("Auto-accept off")
    shot(page, screenshots, "learning-review")
    page.click("#accept")
    expect(page.locator("#proposal-result")).to_contain_text("Accepted in alert mode")
    expect(page.locator("#review-state .pill").first).to_have_text("accepted")
    expect(page.locator("#review-steps .step.current")).to_have_attribute("data-step", "accepted")
    with console.api() as c:
        mgmt = c.get("/audits/mgmt", params={"limit": 50}).json()
    assert any(m.get("action") == "learning.accept" for m in mgmt), mgmt[:3]
    assert any(m.get("action") == "learning.auto_accept" and m["detail"]["auto_accept"] == "off" for m in mgmt)
    expect(page.locator("#auto-accept")).to_be_disabled()

    # 3. after accepting, the frontend reaches a new host: new since accept, alerted on by the rule;
    # the open map shows it when the console pushes the change (the page no longer polls)
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/discovery/stream" in r.url else None)
    page.goto(f"/discovery?org={ORG}")
    _map_ready(page, 5)
    expect(page.locator("#live-indicator")).to_have_text("Live")
    send_reports(console, [_frontend([seen(time.time(), ip="192.0.2.99", port=6379)])], run_id="run-2")
    _map_ready(page, 6)
    assert streams, "the map page did not open the push stream"
    front, worker = node("prod", FRONT), node("dev", WORKER)
    expect(page.locator(f'#map [data-v="{node("prod", BILLING)}"]')).to_have_count(1)
    expect(page.locator('#map [data-v="dns:api.example.org"]')).to_have_count(1)
    expect(page.locator("#map .box-title", has_text=f"{ORG}/prod")).to_have_count(1)
    expect(page.locator("#map .box-title", has_text="198.51.100.0/24")).to_have_count(1)
    expect(page.locator("#map .box-title", has_text="*.example.org")).to_have_count(1)
    expect(page.locator("#map .box-title", has_text="2001:db8:0::/48")).to_have_count(1)  # IPv6 by /48
    expect(_edge(page, front, node("prod", BILLING))).to_have_count(1)
    fresh = _edge(page, front, "ip:192.0.2.99")
    expect(fresh).to_have_class(_has("new"))
    expect(fresh).to_have_class(_has("denied-alert"))
    expect(_edge(page, front, "dns:api.example.org")).not_to_have_class(_has("denied-alert"))
    page.fill("#map-search", "billing")
    expect(page.locator("#map-matches")).to_have_text("1 match")
    expect(page.locator(f'#map [data-v="{node("prod", BILLING)}"]')).to_have_class(_has("match"))
    page.fill("#map-search", "")
    shot(page, screenshots, "discovery-map")

    # 4. allow the new edge from the map, in one step
    _click_edge(page, front, "ip:192.0.2.99")
    expect(page.locator("#sel-list li")).to_have_count(1)
    expect(page.locator("#sel-list")).to_contain_text("192.0.2.99")
    page.click("#sel-allow")
    expect(page.locator("#sel-result")).to_contain_text("Allowed: policy revision")
    expect(page.locator("#sel-result")).to_contain_text("192.0.2.99")
    expect(_edge(page, front, "ip:192.0.2.99")).not_to_have_class(_has("denied-alert"))
    rule = _rule_of(console, ORG, "prod", FRONT)
    assert "192.0.2.99" in str(rule), rule

    # 5. deny the worker's edge to the external host from the map
    _click_edge(page, worker, "ip:198.51.100.7")
    page.click("#sel-deny")
    expect(page.locator("#sel-result")).to_contain_text("Denied: policy revision")
    # the worker had no rule: its new one alerts (the network control's default effect)
    expect(_edge(page, worker, "ip:198.51.100.7")).to_have_class(_has("denied-alert"))
    assert "198.51.100.7" in str(_rule_of(console, ORG, "dev", WORKER))
    shot(page, screenshots, "discovery-map-rules")

    # 6. enforce the frontend's rule from its review page
    page.goto("/learning")
    page.fill("#prof-q", ORG)
    page.locator("#profiles-table tbody tr", has_text=FRONT).locator("a", has_text=FRONT).click()
    page.wait_for_url("**/learning/review?id=*")
    expect(page.locator("#enforce")).to_be_enabled()
    page.click("#enforce")
    expect(page.locator("#proposal-result")).to_contain_text("Enforced (prevent)")
    expect(page.locator("#review-state .pill").first).to_have_text("enforcing")
    rule = _rule_of(console, ORG, "prod", FRONT)
    assert rule["network"]["effect"] == "prevent", rule


def test_map_collapses_groups_pans_and_zooms(page: Any, console: Any, estate: None) -> None:
    from playwright.sync_api import expect

    page.goto(f"/discovery?org={ORG}")
    _map_ready(page)
    page.click("#map-collapse")  # one node per org/space, edges merged
    group = page.locator(f'#map [data-v="group:{ORG}/prod"]')
    expect(group).to_have_count(1)
    expect(page.locator(f'#map [data-v="{node("prod", BILLING)}"]')).to_have_count(0)
    page.locator("#map .box-title", has_text=f"{ORG}/prod").click()  # expand that group again
    expect(page.locator(f'#map [data-v="{node("prod", BILLING)}"]')).to_have_count(1)
    before = page.get_attribute("#map-viewport", "transform")
    page.click("#zoom-in")
    zoomed = page.get_attribute("#map-viewport", "transform")
    assert zoomed != before
    box = page.locator("#map").bounding_box()
    page.mouse.move(box["x"] + 30, box["y"] + box["height"] - 30)  # an empty corner: pans
    page.mouse.down()
    page.mouse.move(box["x"] + 130, box["y"] + box["height"] - 80, steps=5)
    page.mouse.up()
    assert page.get_attribute("#map-viewport", "transform") != zoomed
    grouped = page.locator('#map path.edge[data-dst="group:~dns:example.org"]')  # the DNS box still grouped
    expect(grouped).to_have_count(1)
    page.click("#map-expand")
    # a selected node lists its edges; one click narrows the selection to one of them
    page.locator(f'#map .node[data-v="{node("prod", FRONT)}"] text').click()
    expect(page.locator("#sel-list .node-edges button")).to_have_count(4)
    page.locator("#sel-list .node-edges button", has_text="api.example.org").click()
    expect(page.locator("#sel-list li.sel-edge")).to_have_count(1)
    expect(page.locator("#sel-list")).to_contain_text("via api.example.org")
    page.click("#map-kinds input[data-kind=external]")  # hide app → external edges
    expect(page.locator('#map path.edge[data-dst^="ip:"]')).to_have_count(0)
    expect(page.locator('#map path.edge[data-dst^="dns:"]')).not_to_have_count(0)


def _has(cls: str) -> Any:
    import re

    return re.compile(rf"(^|\s){re.escape(cls)}(\s|$)")


def _rule_of(console: Any, org: str, space: str, app: str) -> dict[str, Any]:
    pol = console.policy()
    return next(r for r in pol["rules"] if r["name"] == f"learned: {org}/{space}/{app}")


def test_auditor_reads_the_map_and_profiles_but_makes_no_rules(
    browser: Any, console: Any, estate: None
) -> None:
    from playwright.sync_api import expect

    from tests.ui.test_browser import TIMEOUT_MS, login

    console.create_user("map-auditor", "auditor-password-1", "auditor")
    ctx = browser.new_context(
        base_url=console.url, ignore_https_errors=True, viewport={"width": 1280, "height": 800}
    )
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        p = ctx.new_page()
        login(p, "map-auditor", "auditor-password-1")
        p.goto(f"/discovery?org={ORG}")
        _map_ready(p)
        expect(p.locator(f'#map [data-v="{node("dev", WORKER)}"]')).to_have_count(1)
        expect(p.locator("#sel-allow")).to_be_hidden()
        expect(p.locator("#sel-deny")).to_be_hidden()
        p.goto("/learning")
        expect(p.locator("#learn-form")).to_be_hidden()
        p.fill("#prof-q", ORG)
        worker = p.locator("#profiles-table tbody tr", has_text=WORKER)  # learning (reports only)
        expect(worker.locator("td").nth(7).locator(".auditor-only")).to_have_text("off (I review)")  # read only
        expect(worker.locator("select.auto-accept")).to_be_hidden()
        p.locator("#profiles-table tbody tr", has_text=FRONT).locator("a", has_text=FRONT).click()
        expect(p.locator("#review-title")).to_contain_text(FRONT)
        expect(p.locator("#accept")).to_be_hidden()
        expect(p.locator("#enforce")).to_be_hidden()
    finally:
        ctx.close()


@pytest.mark.parametrize("width", [1280, 1920])
def test_map_page_layout(browser: Any, console: Any, estate: None, width: int, screenshots: Path) -> None:
    """The map and the selection panel side by side and on screen, no sideways scrolling of the page."""
    from tests.ui.test_browser import TIMEOUT_MS, login

    ctx = browser.new_context(
        base_url=console.url, ignore_https_errors=True, viewport={"width": width, "height": 900}
    )
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        p = ctx.new_page()
        login(p, console.admin_user, console.admin_password)
        p.goto(f"/discovery?org={ORG}")
        _map_ready(p)
        m = p.evaluate(
            """() => { const r = (s) => document.querySelector(s).getBoundingClientRect();
                       const el = document.scrollingElement;
                       return {overflow: el.scrollWidth - el.clientWidth, map: r("#map").toJSON(),
                               side: r("#map-side").toJSON(), deny: r("#sel-deny").toJSON()}; }"""
        )
        assert m["overflow"] <= 0, m
        assert m["map"]["width"] >= 600 and m["map"]["height"] >= 450, m
        assert m["side"]["left"] >= m["map"]["right"] and m["side"]["right"] <= width, m
        assert m["deny"]["right"] <= m["side"]["right"], m  # the buttons fit their panel
        shot(p, screenshots, f"discovery-map-{width}")
    finally:
        ctx.close()
