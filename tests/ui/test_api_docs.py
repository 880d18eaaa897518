"""/api/v1/docs renders in Chromium with no internet (issue 10 #10, issue 14 #5).

Every request to a host other than the console is aborted and recorded (the browser is offline for
anything but the console), and the page must render the whole API under its CSP without a single
violation. Without a sign-in the page sends the browser to /login first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.browser]
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def offline(browser: Any, console: Any) -> Iterator[tuple[Any, list[str]]]:
    ctx = browser.new_context(base_url=console.url, ignore_https_errors=True)
    ctx.set_default_timeout(TIMEOUT_MS)
    host = urlsplit(console.url).netloc
    foreign: list[str] = []

    def guard(route: Any) -> None:
        if urlsplit(route.request.url).netloc != host:
            foreign.append(route.request.url)
            route.abort("internetdisconnected")
        else:
            route.continue_()

    ctx.route("**/*", guard)
    yield ctx, foreign
    ctx.close()


def test_docs_render_offline_under_csp(offline: Any, console: Any) -> None:
    ctx, foreign = offline
    page = ctx.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    # Not signed in: to the login page, and back to the docs after signing in.
    page.goto("/api/v1/docs")
    page.wait_for_url("**/login?next=*")
    page.fill("#username", console.admin_user)
    page.fill("#password", console.admin_password)
    page.click("button[type=submit]")
    page.wait_for_url("**/api/v1/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "Garrison Console API" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector("#operations-defenders-list_defenders_api_v1_defenders_get")
    assert page.locator(".opblock").count() >= 25
    assert foreign == [], foreign
    csp = [p for p in problems if "Content Security Policy" in p or "Refused" in p]
    assert csp == [], csp
    page.close()
