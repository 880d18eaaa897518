"""Browser fixtures: Debian's Chromium driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("GARRISON_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"{CHROMIUM} not installed (Debian package 'chromium'; scripts/bootstrap --test installs it)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def signed_in_page(browser: Any, console: Any, width: int = 1280, timeout_ms: int = 20_000) -> tuple[Any, Any, list[str]]:
    """(context, page, page errors): a page signed in as the console's admin, on the dashboard."""
    ctx = browser.new_context(base_url=console.url, ignore_https_errors=True, accept_downloads=True,
                              viewport={"width": width, "height": 900})  # fmt: skip
    ctx.set_default_timeout(timeout_ms)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto("/login")
    page.fill("#username", console.admin_user)
    page.fill("#password", console.admin_password)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard")
    return ctx, page, errors
