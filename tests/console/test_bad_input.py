"""Bad input gets a clear 4xx and changes nothing."""

from __future__ import annotations

import uuid

import pytest

POLICY = "/policies/runtime/app-embedded"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rules": [{"name": "x", "processes": {"effect": "maybe"}}]}, "effect"),
        ({"rules": [{"name": "x", "unknown_control": {}}]}, "unknown_control"),
        ({"rules": [{"name": "x"}, {"name": "x"}]}, "duplicate rule name"),
        ({"rules": "not-a-list"}, "rules"),
        ({"rules": [{"name": "x", "network": {"outbound": {"allow": ["10.0.0.0/99"]}}}]}, "allow"),
    ],
)
def test_invalid_policy_is_422_naming_the_field(console, body, field):
    before = console.policy()
    with console.api() as c:
        r = c.put(POLICY, json=body)
    assert r.status_code == 422, r.text
    assert field in r.text
    assert console.policy() == before


def test_malformed_json_and_wrong_content(console):
    before = console.policy()
    with console.api() as c:
        for raw in (b"{", b"[]", b"null", b'{"rules": [}', '{"rules": []}'.encode("utf-16")):
            r = c.put(POLICY, content=raw, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (raw, r.status_code, r.text)
    assert console.policy() == before


def test_oversized_body_is_413(console):
    before = console.policy()
    huge = b'{"rules": [], "pad": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    with console.api() as c:
        r = c.put(POLICY, content=huge, headers={"content-type": "application/json"})
        assert r.status_code == 413

        def chunks():
            yield b'{"rules": [], "pad": "'
            for _ in range(40):
                yield b"x" * 100_000
            yield b'"}'

        r = c.put(POLICY, content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
    assert console.policy() == before


def test_nul_characters(console):
    """NUL in the URL or raw in a body: 400. An escaped \\u0000 in a JSON string is valid JSON and is
    stored as U+FFFD (PostgreSQL text cannot hold NUL), the same on both databases."""
    with console.api() as c:
        assert c.get("/audits/runtime/app-embedded", params={"app": "a\x00b"}).status_code == 400
        assert c.get("/scans", params={"digest": "sha256:\u0000"}).status_code == 400
        raw = c.post("/scans", content=b'{"digest": "sha256:\x00", "verdict": "pass"}',
                     headers={"content-type": "application/json"})  # fmt: skip
        assert raw.status_code == 400
        digest = f"sha256:nul-{uuid.uuid4().hex}"
        r = c.post("/scans", json={"digest": digest + "\u0000", "verdict": "pass"})
        assert r.status_code == 201, r.text
        stored = c.get(f"/scans/{r.json()['id']}").json()
        assert stored["digest"] == digest + "\ufffd"


@pytest.mark.parametrize(
    "value", ["' OR 1=1 --", "x'; DROP TABLE events; --", '" OR ""="', "%", "_", "\\", "app' UNION SELECT *"]
)
def test_sql_metacharacters_in_filters(console, value):
    with console.api() as c:
        for path, key in (
            ("/audits/runtime/app-embedded", "app"),
            ("/audits/runtime/app-embedded", "rule"),
            ("/defenders", "app"),
            ("/scans", "digest"),
            ("/incidents", "defender"),
        ):
            r = c.get(path, params={key: value})
            assert r.status_code == 200 and r.json() == [], (path, r.text)
        assert c.get("/version").status_code == 200  # tables still there


def test_bad_filter_values(console):
    with console.api() as c:
        for params in (
            {"from": "yesterday"},
            {"to": "nan"},
            {"from": "1e300"},
            {"type": "nope"},
            {"effect": "DROP"},
            {"limit": "0"},
            {"limit": "100000"},
            {"offset": "-1"},
            {"limit": "abc"},
        ):
            r = c.get("/audits/runtime/app-embedded", params=params)
            assert r.status_code == 422, (params, r.text)
        assert (
            c.get("/audits/runtime/app-embedded", params={"from": "2026-01-01T00:00:00Z"}).status_code == 200
        )
        assert c.get("/scans/99999999999999999999").status_code == 422
        for addr in ("bad host/x", "[", "[::1", "http://[x]:1"):
            r = c.get("/defenders/install-bundle", params={"consoleaddr": addr})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "consoleaddr"], r.text


def test_scan_reports(console):
    digest = "sha256:" + uuid.uuid4().hex
    with console.api() as c:
        for body in ({"verdict": "pass"}, {"digest": digest}, {"digest": 5, "verdict": "pass"}, []):
            assert c.post("/scans", json=body).status_code == 422
        assert c.get("/scans", params={"digest": digest}).json() == []
        unknown = c.get("/scans/verdict", params={"digest": digest})
        assert unknown.status_code == 200 and unknown.json()["verdict"] == "unknown"
        r1 = c.post(
            "/scans",
            json={"digest": digest, "verdict": "fail", "app_name": "shop", "vulns": [1], "reasons": ["x"]},
        )
        failed = c.get("/scans/verdict", params={"digest": digest}).json()
        assert (
            failed["verdict"] == "fail"
            and failed["reasons"] == ["x"]
            and failed["effect"] in ("alert", "prevent")
        )
        r2 = c.post(
            "/scans", json={"digest": digest, "verdict": "pass", "app_name": "shop", "summary": {"high": 0}}
        )
        assert r1.status_code == r2.status_code == 201
        assert c.get("/scans/verdict", params={"digest": digest}).json()["verdict"] == "pass"
        full = c.get(f"/scans/{r1.json()['id']}").json()
        assert full["body"]["vulns"] == [1] and full["verdict"] == "fail"
        assert len(c.get("/scans", params={"app": "shop", "digest": digest}).json()) == 2


def test_assurance_policy(console):
    with console.api() as c:
        before = c.get("/policies/assurance").json()
        r = c.put("/policies/assurance", json={"runtime_effect": "explode"})
        assert r.status_code == 422 and "runtime_effect" in r.text
        assert c.put("/policies/assurance", json={"bogus_field": 1}).status_code == 422
        assert c.get("/policies/assurance").json() == before
        saved = c.put("/policies/assurance", json={"runtime_effect": "prevent", "block_secrets": False})
        assert saved.status_code == 200, saved.text
        got = c.get("/policies/assurance").json()
        assert got["runtime_effect"] == "prevent" and got["block_secrets"] is False
        assert c.get("/scans/verdict", params={"digest": "sha256:none"}).json()["effect"] == "prevent"


def test_large_scan_report_allowed_but_bounded(console):
    pkgs = [{"name": f"p{i}", "version": "1.0", "purl": "pkg:pypi/p" + "x" * 200} for i in range(12_000)]
    with console.api() as c:
        r = c.post("/scans", json={"digest": "sha256:big", "verdict": "pass", "packages": pkgs})
        assert r.status_code == 201  # ~3 MiB: over the general limit, within the scan-report one
        huge = b'{"digest": "sha256:huge", "verdict": "pass", "pad": "' + b"x" * (33 * 1024 * 1024) + b'"}'
        r = c.post("/scans", content=huge, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.get("/scans", params={"digest": "sha256:huge"}).json() == []
