"""Remote file inclusion: a parameter that is a URL of the kind include()-style bugs fetch.

An off-site URL alone is normal (redirects, webhooks), so it counts only with a sign of inclusion:
a bare IP host, a trailing '?'/'#' that cuts the app's suffix, a script extension, an include-style
parameter name, or a scheme no web form legitimately carries.
"""

from __future__ import annotations

import re

from garrison.cnaf.fields import Field

_URL = re.compile(r"^\s*(?P<scheme>https?|ftps?|gopher|dict|ldap|tftp|smb|sftp)://(?P<rest>\S*)", re.I)
_IP_HOST = re.compile(
    r"^(?:[^/@]*@)?(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:]+\]|0x[0-9a-f]+|\d{8,10})(?::\d+)?(?:/|$|\?)", re.I
)
_SCRIPT_EXT = re.compile(
    r"\.(?:php\d?|phtml|txt|sh|pl|py|asp|aspx|jsp|cgi|inc|exe|war|jar)(?:$|\?|#|\x00)", re.I
)
_INCLUDE_PARAMS = re.compile(
    r"^(?:include|inc|require|page|file|path|template|tpl|module|mod|load|dir|document|folder|root|conf|"
    r"config|lang|language|site|show|cat|view|content|layout|pg|style|pdf|src)$",
    re.I,
)
_BROWSER_URL_HEADERS = frozenset({"referer", "origin"})
_RARE_SCHEMES = frozenset({"gopher", "dict", "ldap", "tftp", "smb"})


def detect(value: str, field: Field) -> str | None:
    if "://" not in value:
        return None
    m = _URL.match(value)
    if not m:
        return None
    scheme = m.group("scheme").lower()
    rest = m.group("rest")
    if scheme in _RARE_SCHEMES:
        return f"remote inclusion through {scheme}://"
    # the browser writes Referer/Origin: the page the user came from, an IP host when the app is
    # reached by address; only the signs above (gopher://…) make it suspicious
    if field.location == "header" and field.name.lower() in _BROWSER_URL_HEADERS:
        return None
    if _IP_HOST.match(rest):
        return "remote inclusion of a URL with an IP address host"
    if rest.endswith(("?", "#", "\x00")):
        return "remote inclusion of a URL ending in '?' (suffix cut-off)"
    if _SCRIPT_EXT.search(rest):
        return "remote inclusion of a script URL"
    if _INCLUDE_PARAMS.match(field.name) and field.location in ("query", "body", "cookie"):
        return f"remote URL in include-style parameter {field.name!r}"
    return None
