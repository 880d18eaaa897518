"""The OpenAPI document, the interactive API docs and /metrics — and who may read them.

By default all three need a token (any role): the OpenAPI document maps every operation and
/metrics tells how many defenders and events a console has. `--public-metrics` (a Prometheus
scraper without credentials) and `--public-api-docs` opt out. The docs page is Swagger UI served
from the `fastapi-offline` package's assets (no CDN: it works on an air-gapped foundation) under the
same CSP and frame headers as the web UI; it borrows the UI's sign-in token to fetch the document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from garrison.console.api.deps import Ctx, principal

API_PREFIX = "/api/v1"
DOCS_PATH = f"{API_PREFIX}/docs"
_UI_STATIC = Path(__file__).resolve().parents[1] / "ui" / "static"
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".png": "image/png"}

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
UI_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# Swagger UI (React) sets style attributes on its elements; everything else is as strict as the UI.
DOCS_CSP = UI_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")

router = APIRouter(include_in_schema=False)


def _swagger_assets() -> Path | None:
    try:
        import fastapi_offline
    except ImportError:  # pragma: no cover - a pinned dependency
        return None
    return Path(fastapi_offline.__file__).parent / "static"


def public_or_reader(what: str) -> Any:
    """Dependency: a reader's token unless the operator made `what` public."""

    def check(request: Request, c: Ctx) -> None:
        if what not in c.public:
            principal(request, c)

    return Depends(check)


@router.get(f"{API_PREFIX}/openapi.json")
def openapi(request: Request, _a: Annotated[None, public_or_reader("docs")]) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get(DOCS_PATH)
def docs() -> HTMLResponse:
    """The page itself holds nothing: the document it shows needs a token (see docs.js)."""
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>Garrison Console API</title>"
        f'<link rel="icon" href="{DOCS_PATH}/assets/favicon.png">'
        f'<link rel="stylesheet" href="{DOCS_PATH}/assets/swagger-ui.css">'
        '</head><body><div id="swagger-ui"></div>'
        f'<script src="{DOCS_PATH}/assets/swagger-ui-bundle.js"></script>'
        f'<script src="{DOCS_PATH}/assets/docs.js"></script>'
        "</body></html>"
    )
    return HTMLResponse(html, headers={**PAGE_HEADERS, "Content-Security-Policy": DOCS_CSP})


@router.get(f"{DOCS_PATH}/assets/{{name}}")
def docs_asset(name: str) -> Response:
    """Swagger UI's files from the fastapi-offline package, and our start-up script."""
    base = _UI_STATIC if name == "docs.js" else _swagger_assets()
    allowed = {"docs.js", "swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}
    path = base / name if base is not None and name in allowed else None
    if path is None or not path.is_file():
        raise HTTPException(status_code=404, detail="not found")
    return Response(
        path.read_bytes(),
        media_type=_TYPES[path.suffix],
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
