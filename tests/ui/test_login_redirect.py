"""After sign-in the browser goes only to a same-origin page (issue 10 #7), checked in Chromium.

Every request the browser makes to another host is recorded and aborted, so the test does not
depend on whether evil.example resolves: any attempt to leave the console fails it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

pytestmark = [pytest.mark.browser]
TIMEOUT_MS = 20_000

HOSTILE = [
    "/%5Cevil.example/x",  # the review's examples, as they appear in the URL
    "/%09/evil.example/",
    "//evil.example/",
    "/\\evil.example/",
    "https://evil.example/",
    "/..//evil.example/",
    "/./%5C%5Cevil.example",
    "javascript:alert(1)",
    "%2F%2Fevil.example",
    "/%0A/evil.example",
]


@pytest.fixture(scope="module")
def context(browser: Any, console: Any) -> Iterator[tuple[Any, list[str]]]:
    ctx = browser.new_context(base_url=console.url, ignore_https_errors=True)
    ctx.set_default_timeout(TIMEOUT_MS)
    console_host = urlsplit(console.url).netloc
    foreign: list[str] = []

    def guard(route: Any) -> None:
        if urlsplit(route.request.url).netloc != console_host:
            foreign.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    ctx.route("**/*", guard)
    yield ctx, foreign
    ctx.close()


def _sign_in(page: Any, console: Any, next_raw: str) -> None:
    page.goto(f"/login?next={next_raw}")
    page.fill("#username", console.admin_user)
    page.fill("#password", console.admin_password)
    page.click("button[type=submit]")


@pytest.mark.parametrize("next_raw", HOSTILE)
def test_hostile_next_lands_on_the_dashboard(context: Any, console: Any, next_raw: str) -> None:
    ctx, foreign = context
    page = ctx.new_page()
    try:
        _sign_in(page, console, next_raw)
        page.wait_for_url("**/dashboard")
        assert page.url.startswith(console.url + "/dashboard")
        assert foreign == [], foreign
    finally:
        page.close()


def test_same_origin_next_is_kept(context: Any, console: Any) -> None:
    ctx, foreign = context
    page = ctx.new_page()
    try:
        _sign_in(page, console, quote("/audits?app=shop#top", safe=""))
        page.wait_for_url("**/audits?app=shop#top")
        assert page.url == console.url + "/audits?app=shop#top"
        assert foreign == []
    finally:
        page.close()
