"""Attack and scanning tools recognised by the User-Agent (and a few headers) they send."""

from __future__ import annotations

import re

from garrison.cnaf.fields import Field

# Matched as whole lower-case words (a set lookup per word is far cheaper than a big alternation).
_TOOLS = frozenset(
    [
        "sqlmap",
        "nikto",
        "nmap",
        "masscan",
        "zgrab",
        "nuclei",
        "acunetix",
        "netsparker",
        "invicti",
        "w3af",
        "wpscan",
        "joomscan",
        "dirbuster",
        "gobuster",
        "dirb",
        "wfuzz",
        "ffuf",
        "feroxbuster",
        "hydra",
        "arachni",
        "skipfish",
        "whatweb",
        "openvas",
        "jaeles",
        "commix",
        "xsstrike",
        "havij",
        "fimap",
        "paros",
        "webinspect",
        "appscan",
        "qualysguard",
        "zmeu",
        "morfeus",
        "brutus",
        "bsqlbf",
        "sqlninja",
        "pangolin",
        "grabber",
        "nessus",
        "burpcollaborator",
        "interactsh",
        "dotdotpwn",
        "wapiti",
        "struts-pwn",
        "metasploit",
        "msfconsole",
        "medusa",
        "x-scanner",
    ]
)
_PHRASES = ("fuzz faster u fool", "owasp zap", "nmap scripting engine", "zap/")
_WORDS = re.compile(r"[a-z][a-z0-9-]*")
_TOOL_HEADERS = frozenset({"acunetix-product", "acunetix-aspect", "x-wipp", "x-scanner", "x-request-memo"})


def detect(value: str, field: Field) -> str | None:
    if field.location != "header":
        return None
    name = field.name.lower()
    if name in _TOOL_HEADERS:
        return f"scanner header {field.name}"
    if name == "user-agent":
        low = value.lower()
        for word in _WORDS.findall(low):
            if word in _TOOLS or word.split("-", 1)[0] in _TOOLS:
                return f"attack tool {word!r}"
        for phrase in _PHRASES:
            if phrase in low:
                return f"attack tool {phrase!r}"
    return None
