"""Cross-site scripting: markup or script that a browser would run if the value were echoed.

Matches what an HTML5 parser would turn into script execution — script-capable tags, event-handler
attributes (also after `/` separators), `javascript:` URLs, CSS expressions — rather than single
words, so prose and code snippets that mention `alert` or `<b>` pass.
"""

from __future__ import annotations

import re

from garrison.cnaf.fields import Field

_TAG = re.compile(
    r"<\s*/?\s*(?:script|iframe|frame|frameset|object|embed|applet|meta|base|link|style|svg|math|"
    r"xml|import|isindex|template|portal)\b",
    re.I,
)
_HANDLER = re.compile(r"<[a-z!/?][^>]{0,512}?[\s/\"'`]on[a-z]{3,}\s*=", re.I)
_ATTR_BREAKOUT = re.compile(r"[\"'`][\s/]*(?:>|[^=\s]{0,64}\s+)?[\s/]*on[a-z]{3,}\s*=\s*[^\s]", re.I)
_JS_URL = re.compile(
    r"(?:^|[=(,]\s*[\"'`]?)\s*(?:javascript|vbscript|livescript|mocha)\s*:|data\s*:\s*text/(?:html|xml)|"
    r"data\s*:\s*(?:text/(?:html|xml|javascript)|image/svg\+xml|application/(?:xhtml|javascript))[^,]*;\s*base64",
    re.I,
)
_CSS = re.compile(r"expression\s*\(|-moz-binding|behavior\s*:\s*url|@import\b", re.I)
_JS_BREAKOUT = re.compile(
    r"[\"'`]\s*(?:[-+*/;,)|&]+\s*)+(?:alert|prompt|confirm|eval|print|fetch|import)\s*(?:\(|`[^`\s]*`)|"
    r"(?:document\s*\.\s*(?:cookie|domain|write)|window\s*\.\s*location|\.innerhtml)\s*[=(]?",
    re.I,
)
# JavaScript that calls a sink without a plain `alert(`: property access on a global object
# (`window["alert"](1)`, `self['al'+'ert']`, `top[/al/.source+…]`), tagged template literals
# (alert`1`), the Function constructor reached through any object (`[].constructor.constructor(…)`).
_JS_GADGET = re.compile(
    r"\b(?:window|self|top|parent|frames|globalThis|this|document|content)\s*\[\s*[\"'`/(][^\]]{0,80}\]\s*[(`]|"
    r"\b(?:alert|prompt|confirm|eval|print|fetch|setTimeout|setInterval|Function)\s*`[^`]*`|"
    r"\bconstructor\s*(?:\.\s*constructor|\[\s*['\"`]constructor['\"`]\s*\])\s*\(|"
    r"\b(?:setTimeout|setInterval|Function)\s*\(\s*['\"`][^'\"`]*\b(?:alert|prompt|confirm|eval|document\.cookie)\b|"
    r"\bon[a-z]{3,}\s*=\s*['\"`]?\s*(?:alert|prompt|confirm|eval)\s*[(`]",
    re.I,
)
_QUICK = re.compile(r"[<\"'`:(\[]")


# A parameter *name* that is an event-handler assignment (`?onload=…`, `? onfocus= =x`): the page
# echoing parameter names into markup gets a handler; no form names a field like that.
_HANDLER_NAME = re.compile(r"^\W*on[a-z]{3,40}\s*=", re.I)


def detect(value: str, field: Field) -> str | None:
    if field.location.endswith("_name") and _HANDLER_NAME.match(value):
        return "XSS (event handler as a parameter name)"
    if not _QUICK.search(value):
        return None
    squashed = value.replace("\t", "").replace("\n", "").replace("\r", "").replace("\x00", "")
    for rx, reason in (
        (_TAG, "script-capable HTML tag"),
        (_HANDLER, "HTML event handler"),
        (_JS_URL, "script URL"),
        (_ATTR_BREAKOUT, "attribute breakout with event handler"),
        (_CSS, "CSS script expression"),
        (_JS_BREAKOUT, "JavaScript string breakout"),
        (_JS_GADGET, "JavaScript sink reached without a plain call"),
    ):
        if rx.search(squashed):
            return f"XSS ({reason})"
    return None
