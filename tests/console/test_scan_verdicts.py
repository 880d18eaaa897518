"""Which report decides a droplet's verdict (issue 18 item 1), on SQLite and PostgreSQL: reports are
keyed to the droplet *and* the app; another app's report never answers; a report computed with an older
vulnerability database does not clear a failure found with a newer one."""

from __future__ import annotations

from typing import Any

import pytest

from garrison.console.services.policies import PolicyService
from garrison.console.services.scans import ScanService
from garrison.console.store.open import Store

D = "sha256:" + "d" * 64
A, B = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"


@pytest.fixture
def scans(store: Store) -> ScanService:
    return ScanService(store, PolicyService(store))


def report(verdict: str, guid: str = "", db: str | None = None, **kw: Any) -> dict[str, Any]:
    app = {"guid": guid, "name": f"shop-{guid[:4]}", "org": "acme", "space": "prod"} if guid else None
    return {
        "digest": D,
        "verdict": verdict,
        "reasons": [f"{verdict} for {guid or 'anyone'}"],
        "app": app,
        "db_updated_at": db,
        "db_revision": f"1@{db}" if db else "",
        "source": "staging",
        **kw,
    }


def test_same_content_two_apps_each_their_own_verdict(scans: ScanService) -> None:
    scans.add(report("fail", A, "2026-12-01T00:00:00+00:00"))
    scans.add(report("pass", B, "2026-12-01T00:00:00+00:00"))
    a, b = scans.verdict(D, A), scans.verdict(D, B)
    assert (a["verdict"], b["verdict"]) == ("fail", "pass")
    assert a["app_guid"] == A and a["reasons"] == [f"fail for {A}"] and a["db_revision"].startswith("1@")
    assert scans.verdict(D, "cccccccc-0000-4000-8000-000000000003")["verdict"] == "unknown"
    # a report about the droplet for no app in particular (e.g. `garrison scan --report-to`) is the fallback
    scans.add(report("fail"))
    assert scans.verdict(D, "cccccccc-0000-4000-8000-000000000003")["verdict"] == "fail"
    assert scans.verdict(D, B)["verdict"] == "pass"


def test_posted_reports_do_not_clear_the_consoles_rescan(scans: ScanService) -> None:
    scans.add(report("fail", A, None, source="blobstore"), rescan=True)  # console rescan, no DB yet
    scans.add(report("pass", A, "2026-11-01T00:00:00+00:00"))  # staging, bundled DB
    assert scans.verdict(D, A)["verdict"] == "pass"  # a rescan without a DB does not outrank staging
    scans.add(report("fail", A, "2026-12-01T00:00:00+00:00", source="blobstore"), rescan=True)  # new advisory
    scans.add(report("pass", A, "2026-11-01T00:00:00+00:00"))  # restaged later with the old bundled DB
    scans.add(report("pass", A, "2099-01-01T00:00:00+00:00"))  # a token holder's forged "newer DB" pass
    v = scans.verdict(D, A)
    assert v["verdict"] == "fail" and v["source"] == "blobstore"
    # the policy got a waiver: the console rescans, and its newer report decides
    scans.add(report("pass", A, "2026-12-01T00:00:00+00:00", source="blobstore"), rescan=True)
    assert scans.verdict(D, A)["verdict"] == "pass"
    with pytest.raises(ValueError, match="reserved"):
        scans.add(report("pass", A, "2026-12-01T00:00:00+00:00", source="blobstore"))


def test_listing_history_and_latest_per_droplet(scans: ScanService) -> None:
    scans.add(report("pass", A, "2026-11-01T00:00:00+00:00"))
    scans.add(
        report("fail", A, "2026-12-01T00:00:00+00:00", source="blobstore", blob="cc-droplets/ab/cd/x/y"),
        rescan=True,
    )
    scans.add(report("pass", B, "2026-11-01T00:00:00+00:00"))
    history = scans.store.scans.list(app_guid=A)
    assert [r["verdict"] for r in history] == ["fail", "pass"]
    assert history[0]["org"] == "acme" and history[0]["space"] == "prod" and history[0]["blob"].endswith("/y")
    latest = scans.store.scans.latest_per_droplet()
    assert sorted((r["app_guid"], r["verdict"]) for r in latest) == [(A, "fail"), (B, "pass")]
    assert [r["verdict"] for r in scans.store.scans.list(verdict="fail")] == ["fail"]


def test_the_api_refuses_reports_posing_as_console_rescans(console: Any) -> None:
    with console.api() as c:
        body = report("pass", A, "2026-12-01T00:00:00+00:00", source="blobstore")
        r = c.post("/scans", json=body)
        assert r.status_code == 422 and "source" in r.text
        assert c.post("/scans", json={**body, "source": "staging"}).status_code == 201
        assert c.post("/scans", json={**body, "verdict": "maybe"}).status_code == 422
