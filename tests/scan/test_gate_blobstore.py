"""Run-time gate (defender asks the console) and the blobstore rescanner (schedule + DB updates)."""

from __future__ import annotations

import threading
from pathlib import Path

from garrison.scan.blobstore import BlobstoreScanner
from garrison.scan.console import ConsoleConfig
from garrison.scan.gate import check_droplet, decide, file_digest
from garrison.scan.model import ScanReport, VerdictResponse
from garrison.scan.vulndb.index import VulnIndex
from tests.scan.helpers import StubConsole, dist_info, make_droplet


def test_decide_is_pure() -> None:
    fail = VerdictResponse(digest="sha256:1", verdict="fail", reasons=["2 secrets found"], effect="prevent")
    d = decide(fail)
    assert not d.allow and "2 secrets found" in d.reason
    assert decide(fail.model_copy(update={"effect": "alert"})).allow
    unknown = VerdictResponse(digest="sha256:1", verdict="unknown")
    assert decide(unknown).allow and not decide(unknown, require_scan=True).allow
    assert decide(VerdictResponse(digest="d", verdict="pass")).allow


def test_check_droplet_against_console(tmp_path: Path) -> None:
    droplet = make_droplet(tmp_path / "d.tgz", {"app/x": "1"})
    digest = file_digest(droplet)
    with StubConsole() as console:
        console.verdicts[digest] = {
            "digest": digest,
            "verdict": "fail",
            "reasons": ["malware"],
            "effect": "prevent",
        }
        cfg = ConsoleConfig(url=console.url, token="tok")
        d = check_droplet(cfg, digest, "shop")
        assert not d.allow and d.verdict == "fail" and "malware" in d.reason
        assert check_droplet(cfg, "sha256:other").allow
        bad = ConsoleConfig(url=console.url, token="nope")
        assert check_droplet(bad, digest).verdict == "error"
    # the console's own shapes: verdict row without reasons/effect; both come from the report and policy
    with StubConsole(policy={"runtime_effect": "prevent", "revision": 3}) as console:
        console.verdicts[digest] = {
            "id": 7,
            "digest": digest,
            "verdict": "fail",
            "app_name": "shop",
            "summary": {},
        }
        console.rows[7] = {
            "id": 7,
            "digest": digest,
            "body": {"reasons": ["1 secrets found: Private Key at k:1"]},
        }
        d = check_droplet(ConsoleConfig(url=console.url, token="tok"), digest)
        assert not d.allow and d.effect == "prevent" and "Private Key at k:1" in d.reason
    down = ConsoleConfig(url="http://127.0.0.1:9", token="t", timeout=2)
    assert check_droplet(down, digest).allow
    closed = check_droplet(down, digest, fail_open=False)
    assert not closed.allow and "fail-closed" in closed.reason


def test_blobstore_rescans_on_change_schedule_and_db_update(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    (blobs / "ab" / "cd").mkdir(parents=True)
    make_droplet(blobs / "ab" / "cd" / "guid1", {**dist_info("demo", "1.0")})
    (blobs / "ab" / "junk").write_bytes(b"not a droplet")
    db = tmp_path / "db"
    adv = {
        "id": "DEMO-1",
        "modified": "2024-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "demo"}, "versions": ["1.0"]}],
    }
    with VulnIndex(db, create=True) as ix:
        ix.import_advisories([], "empty")
    now = [0.0]
    results: list[tuple[str, ScanReport]] = []
    errors: list[str] = []
    scanner = BlobstoreScanner(
        blobs,
        db,
        lambda p, r: results.append((p.name, r)),
        on_error=lambda p, e: errors.append(p.name),
        interval_s=100,
        clock=lambda: now[0],
    )
    scanner.scan_once()
    assert [n for n, _ in results] == ["guid1"] and errors == ["junk"]
    assert results[0][1].vulnerabilities == [] and results[0][1].blob == "ab/cd/guid1"
    assert results[0][1].app_name == "" and results[0][1].source == "blobstore"
    scanner.scan_once()  # nothing changed, nothing due
    assert len(results) == 1
    with VulnIndex(db, writable=True) as ix:
        ix.import_advisories([adv], "update")
    scanner.scan_once()  # DB generation moved: full rescan finds the new advisory
    assert len(results) == 2 and [v.id for v in results[1][1].vulnerabilities] == ["DEMO-1"]
    now[0] = 150.0
    scanner.scan_once()  # interval elapsed
    assert len(results) == 3
    make_droplet(blobs / "new", {"app/y": "2"})
    scanner.scan_once()  # only the new droplet
    assert [n for n, _ in results[3:]] == ["new"]


def test_blobstore_background_thread(tmp_path: Path) -> None:
    make_droplet(tmp_path / "d1", {"app/y": "2"})
    done = threading.Event()
    scanner = BlobstoreScanner(tmp_path, None, lambda p, r: done.set(), poll_s=0.05)
    scanner.start()
    try:
        assert done.wait(30)
    finally:
        scanner.stop()
