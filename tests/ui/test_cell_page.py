"""A cell defender on the Defenders page (type, container count) and its own page listing the app
containers it protects, in Chromium."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from garrison.channel import protocol as p
from garrison.channel.bundle import decode_bundle
from garrison.channel.client import DefenderChannelClient
from tests.ui.conftest import signed_in_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def cell(console: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    with console.api() as api:
        bundle = api.get("/defenders/install-bundle/cell").json()["bundle"]
    host = "diego-cell-" + uuid.uuid4().hex[:6]
    ids = [uuid.uuid4().hex[:12] for _ in range(3)]
    wls = [p.Workload(container_id=ids[i], app_name=app, app_id=app, org="acme", space="prod", app_guid=f"{app}-g",
                      instance=i, rule="cell-rule", protections=["exec", "network"])
           for i, app in enumerate(("shop", "shop", "billing"))]  # fmt: skip
    client = DefenderChannelClient(decode_bundle(bundle), tmp_path_factory.mktemp("cell-ui"),
                                   p.Hello(defender_id=f"cell-{host}", hostname=host), defender_type="cell",
                                   on_connect=lambda: [p.Workloads(full=True, up=wls)])  # fmt: skip
    client.start()
    assert client.wait_connected(30), client.last_error
    client.send_message(p.Workloads(gone=[ids[2]]))
    yield client.defender_id, ids
    client.stop()


@pytest.fixture(scope="module")
def page(browser: Any, console: Any) -> Iterator[Any]:
    ctx, pg, errors = signed_in_page(browser, console, 1280, TIMEOUT_MS)
    yield pg
    ctx.close()
    assert errors == []


def test_cell_defender_and_its_containers(page: Any, cell: tuple[str, list[str]], screenshots: Path) -> None:
    did, ids = cell
    page.goto("/defenders")
    row = page.locator(f"tr[data-id='{did}']")
    expect(row).to_contain_text("cell")
    expect(row).to_contain_text("2 app container(s)")
    row.locator("a.link").click()
    page.wait_for_url("**/defenders/cell?id=*")
    expect(page.locator("#workloads-table tbody tr")).to_have_count(2)
    expect(page.locator(f"tr[data-container='{ids[0]}']")).to_contain_text("shop")
    expect(page.locator(f"tr[data-container='{ids[0]}']")).to_contain_text("cell-rule")
    expect(page.locator("#cell-count")).to_have_text("2")
    page.select_option("#wl-running", "false")
    expect(page.locator("#workloads-table tbody tr")).to_have_count(1)
    expect(page.locator(f"tr[data-container='{ids[2]}']")).to_contain_text("stopped")
    page.screenshot(path=str(screenshots / "cell-defender.png"), full_page=True)
