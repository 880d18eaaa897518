"""Session fixation: a framework's session identifier handed to the app as a URL or form parameter.

Session ids travel in cookies; one in a parameter is how an attacker plants a known session on a
victim (a link to `/login?PHPSESSID=<attacker's id>`). As CRS does, it counts only when the request
did not come from the app's own pages: no Referer, or a Referer on another host. The names are the
session cookies of the common web frameworks (Java, PHP, ASP.NET, Node, Rails, Laravel, Play…).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_plus, urlsplit

from garrison.cnaf.fields import Field
from garrison.cnaf.request import HttpRequest

_SESSION_NAME = re.compile(
    r"(?:jsessionid|aspsessionid[a-z]{0,8}|asp\.net_sessionid|phpsessid|phpsession|weblogicsession|"
    r"jservsession|jwsession|cfid|cftoken|cfsid|session[_-]id|"
    r"connect\.sid|sails\.sid|express[:.]sess|koa[:.]sess|"
    r"(?:__(?:secure|host)-)?next-auth\.session-token|meteor_login_token|"
    r"[a-z0-9]+_session|rack\.session|play_session|cakephp|ci_session|_session_id|symfony)\Z",
    re.I,
)
# Every name above contains one of these (case-insensitively): a cheap test for the common request
# (`may_name_session` spells them out: substring tests are several times faster than a regex).
_PARAM_LOCATIONS = frozenset({"query", "body", "query_name", "body_name"})


def _referer_host(req: HttpRequest) -> str | None:
    ref = req.header("referer")
    if ref is None:
        return None
    try:
        return (urlsplit(ref.strip()).netloc or "").lower()
    except ValueError:
        return ""


def may_name_session(text: str) -> bool:
    """False when no session-id parameter name can be in `text` (a URL or a query string)."""
    low = text.lower()
    return (
        "sess" in low
        or "sid" in low
        or "cfid" in low
        or "token" in low
        or "cakephp" in low
        or "symfony" in low
    )


def check(req: HttpRequest, fields: Iterable[Field]) -> str | None:
    """The session parameter's name when one arrives from outside the app's own pages, else None."""
    if not req.body and not may_name_session(req.target):
        return None  # the common request: no session-like name anywhere in the URL
    names = [f.name for f in fields if f.location in _PARAM_LOCATIONS]
    query = req.query
    if query:  # a plain query string is not split into fields: read its names here
        names.extend(unquote_plus(piece.partition("=")[0]) for piece in query.split("&"))
    name = next((n for n in names if _SESSION_NAME.match(n)), None)
    if name is None:
        return None
    host = (req.header("host") or "").strip().lower()
    ref = _referer_host(req)
    if ref is None:
        return f"session id parameter {name!r} with no Referer"
    ref_host = ref.rsplit("@", 1)[-1]
    if host and (ref_host == host or ref_host.endswith("." + host)):
        return None
    return f"session id parameter {name!r} with an off-site Referer ({ref_host or 'unparsable'})"
