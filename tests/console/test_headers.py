"""Security headers and what is public (issue 10 #10): HSTS on every HTTPS response, /metrics and
the OpenAPI document need a token unless the operator opts out, the docs page has the UI's CSP."""

from __future__ import annotations

import httpx


def _get(console, path: str, **kw) -> httpx.Response:
    return httpx.get(console.url + path, verify=console.ssl_context(), **kw)


def test_hsts_on_every_response(console):
    responses = [
        _get(console, "/api/v1/_ping"),
        _get(console, "/api/v1/version"),  # 401
        _get(console, "/api/v1/version", auth=(console.admin_user, console.admin_password)),
        _get(console, "/login"),
        _get(console, "/no-such-page"),  # 404
        _get(console, "/api/v1/version?x=%00"),  # 400 from the request guard
        httpx.post(
            console.url + "/api/v1/authenticate",
            content=b"x" * (3 * 1024 * 1024),
            verify=console.ssl_context(),
        ),  # 413
        _get(console, "/api/v1/docs"),
        _get(console, "/api/v1/docs/assets/swagger-ui-bundle.js"),
    ]
    assert {r.status_code for r in responses} >= {200, 400, 401, 404, 413}
    for r in responses:
        assert r.headers["strict-transport-security"] == "max-age=31536000", r.url
        assert r.headers["x-content-type-options"] == "nosniff"


def test_metrics_and_openapi_need_a_token(console):
    for path in ("/metrics", "/api/v1/openapi.json"):
        assert _get(console, path).status_code == 401
        r = _get(console, path, auth=(console.admin_user, console.admin_password))
        assert r.status_code == 200
    spec = r.json()
    assert spec["info"]["title"] == "Garrison Console API"
    assert "/api/v1/defenders" in spec["paths"]


def test_docs_page_headers_and_local_assets(console):
    page = _get(console, "/api/v1/docs")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert "cdn" not in page.text.lower() and "https://" not in page.text and "<script>" not in page.text
    for name, kind in (
        ("swagger-ui-bundle.js", "javascript"),
        ("swagger-ui.css", "css"),
        ("docs.js", "javascript"),
    ):
        r = _get(console, f"/api/v1/docs/assets/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"] and len(r.content) > 100
    for bad in ("../../../etc/passwd", "..%2F..%2Fcore.py", "index.html", "redoc.standalone.js"):
        assert _get(console, f"/api/v1/docs/assets/{bad}").status_code == 404


def test_operator_can_make_metrics_and_docs_public(console_factory):
    c = console_factory(args=["--public-metrics", "--public-api-docs"])
    assert _get(c, "/metrics").status_code == 200
    assert _get(c, "/api/v1/openapi.json").status_code == 200
    assert _get(c, "/api/v1/version").status_code == 401  # the API itself still needs credentials
