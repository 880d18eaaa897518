"""Routes of the web UI: page shells, static assets, and the session endpoint the pages use."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from garrison import __version__
from garrison.console.api.deps import Reader
from garrison.policy.cnaf import ATTACK_CLASSES

HERE = Path(__file__).parent
STATIC = HERE / "static"
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _asset_version() -> str:
    """Content hash for cache busting: browsers may cache assets forever, a new build gets new URLs."""
    h = hashlib.sha256()
    for p in sorted(STATIC.iterdir()):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


ASSET_VERSION = _asset_version()
_env.globals["cnaf_attack_classes"] = ATTACK_CLASSES

# (path, template, nav key, title, page scripts loaded after app.js)
PAGES: list[tuple[str, str, str, str, tuple[str, ...]]] = [
    ("/login", "login.html", "", "Sign in", ()),
    ("/dashboard", "dashboard.html", "dashboard", "Dashboard", ()),
    ("/defenders", "defenders.html", "defenders", "Defenders", ()),
    ("/defenders/deploy", "deploy.html", "deploy", "Deploy defenders", ()),
    ("/defenders/cell", "cell_defender.html", "defenders", "Cell defender", ()),
    ("/policies/runtime", "policy.html", "policy", "Runtime policy", ()),
    ("/policies/cnaf", "cnaf.html", "cnaf", "CNAF rules", ("cnaf.js",)),
    ("/audits", "audits.html", "audits", "Runtime audits", ()),
    ("/incidents", "incidents.html", "incidents", "Incidents", ()),
    ("/incidents/view", "incident.html", "incidents", "Incident", ("incidents.js",)),
    ("/discovery", "discovery.html", "discovery", "Network discovery map", ("discovery.js",)),
    ("/learning", "learning.html", "learning", "Learning", ("learning.js",)),
    ("/learning/review", "learning_review.html", "learning", "Review a proposed rule", ("learning.js",)),
    ("/scans", "scans.html", "scans", "Scan results", ("scans.js",)),
    ("/scans/view", "scan.html", "scans", "Scan report", ("scans.js",)),
    ("/scans/history", "scan_history.html", "scan-history", "Verdict history", ("scans.js",)),
    ("/policies/assurance", "assurance.html", "assurance", "Assurance policy", ("scans.js",)),
    ("/users", "users.html", "users", "Users", ("users.js",)),
    ("/tokens", "tokens.html", "tokens", "API tokens", ("users.js",)),
    ("/hosts", "hosts.html", "hosts", "Hosts", ("hosts.js",)),
    ("/hosts/{name}", "host.html", "hosts", "Cell", ("hosts.js",)),
]

router = APIRouter(include_in_schema=False)


def render(template: str, **ctx: Any) -> HTMLResponse:
    html = _env.get_template(template).render(version=__version__, asset=ASSET_VERSION, **ctx)
    return HTMLResponse(
        html,
        headers={
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": (
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
            ),
        },
    )


def _page(template: str, nav: str, title: str, scripts: tuple[str, ...]) -> Any:
    def page() -> HTMLResponse:
        return render(template, nav=nav, title=title, scripts=scripts)

    return page


for _path, _template, _nav, _title, _scripts in PAGES:
    router.add_api_route(
        _path, _page(_template, _nav, _title, _scripts), methods=["GET"], response_class=HTMLResponse
    )


@router.get("/")
def index() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=307)


@router.get("/ui/static/{name}")
def static(name: str, request: Request) -> Response:
    """Only the files shipped in static/ (no path components), cached by content hash."""
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
        raise HTTPException(status_code=404, detail="not found")
    cache = "public, max-age=31536000, immutable" if request.query_params.get("v") else "no-cache"
    return Response(path.read_bytes(), media_type=_TYPES[path.suffix], headers={"Cache-Control": cache})


@router.get("/ui/session")
def session(p: Reader, request: Request) -> dict[str, Any]:
    """Who the token belongs to, so pages can hide controls the role may not use."""
    ctx = request.app.state.ctx
    return {
        "username": p.username,
        "role": p.role,
        "can_write": p.can_write,
        "version": __version__,
        "ws_address": getattr(ctx, "ws_address", ""),
        "console_url": getattr(ctx, "console_url", ""),
    }
