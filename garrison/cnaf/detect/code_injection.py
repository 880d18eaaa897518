"""Code injection: PHP, Java (OGNL/EL/Spring), JNDI lookups (Log4Shell), server-side templates.

Log4j lookups are de-obfuscated first (`${lower:j}`, `${::-n}`, `${env:X:-d}`), since that nesting
is how real Log4Shell payloads evaded string matching.
"""

from __future__ import annotations

import re

from garrison.cnaf.fields import Field

_LOOKUP_DEFAULT = re.compile(r"\$\{[^${}]*?:-([^${}]*)\}")
_LOOKUP_CASE = re.compile(r"\$\{(?:lower|upper|date|main|sys|env|ctx|base64)?:([^${}]*)\}", re.I)
_JNDI = re.compile(r"\$\{\s*jndi\s*:", re.I)

_PHP_EXEC = (
    r"(?:system|exec|passthru|shell_exec|popen|proc_open|pcntl_exec|assert|eval|phpinfo|"
    r"file_get_contents|file_put_contents|fopen|readfile|unlink|create_function|call_user_func)"
)
# one piece of a function name put together by concatenation: 'sy' or (st), at least one quoted or
# parenthesised piece (plain `(a.b)(c)` is ordinary JavaScript)
_PHP_FRAG = r"(?:(?:['\"]\w+['\"]|\(\s*['\"]?\w+['\"]?\s*\))(?:\s*\.\s*\w+)*|\w+(?=\s*\.\s*[('\"]))"

# (pattern, reason, cheap lower-case substrings of which one must be present for the pattern to match)
_RULES: tuple[tuple[re.Pattern[str], str, tuple[str, ...]], ...] = (
    # `<?php`, `<?=` or a short open tag `<? ` followed by code; not XML processing instructions
    # (`<?xml …?>`, `<?xml-stylesheet?>`, `<?xpacket?>`), whose `?>` ending is no PHP either.
    (
        re.compile(
            r"<\?\s*(?:php\b|=)|<\?\s+(?:[$@]|\w+\s*\(|echo\b|print\b|include|require)|;\s*\?>\s*$|<\?\s*$",
            re.I,
        ),
        "PHP open tag",
        ("<?", "?>"),
    ),
    # template engines' raw-PHP blocks: Smarty `{php}…{/php}`, BBCode-style `[php]…[/php]`
    (re.compile(r"[{\[]/?php[}\]]", re.I), "PHP block tag", ("php",)),
    # a PHP function called through a string: `"system"(ls)`, `(system)(id)`, `('sy'.'stem')(…)`
    (
        re.compile(
            r"(?:['\"]|\(\s*['\"]?)" + _PHP_EXEC + r"['\"]?\s*\)?\s*\(|"
            r"\(\s*" + _PHP_FRAG + r"(?:\s*\.\s*" + _PHP_FRAG + r")+\s*\)\s*\(",
            re.I,
        ),
        "PHP function called through a string",
        ("(",),
    ),
    (
        re.compile(
            r"\b(?:eval|assert|system|passthru|shell_exec|popen|proc_open|pcntl_exec|create_function|"
            r"call_user_func(?:_array)?|preg_replace|include|require(?:_once)?)\s*\(\s*"
            r"(?:\$_(?:GET|POST|REQUEST|COOKIE|SERVER|FILES)|base64_decode|gzinflate|str_rot13|"
            r"['\"](?:[^'\"]*\b(?:id|whoami|ls|cat|uname|wget|curl)\b)|\$\w+\s*\))",
            re.I,
        ),
        "PHP code execution call",
        ("(",),
    ),
    (re.compile(r"\$_(?:GET|POST|REQUEST|COOKIE|SERVER)\s*\[", re.I), "PHP superglobal", ("$_",)),
    (
        re.compile(r"\bphpinfo\s*\(\s*\)|\bbase64_decode\s*\(", re.I),
        "PHP function",
        ("phpinfo", "base64_decode"),
    ),
    (
        re.compile(
            r"java\.lang\.(?:Runtime|ProcessBuilder|System|Class|reflect)|Runtime\s*\.\s*getRuntime\s*\(|"
            r"new\s+ProcessBuilder\s*\(|\bclass\.(?:module\.)?classLoader\b|#_memberAccess|"
            r"@java\.lang|#context\s*\[|%\{\s*[#(@]|ognl\.|\bT\s*\(\s*java\.|\.getClass\s*\(\s*\)\s*\.forName|"
            r"javax\.script|\bScriptEngineManager\b|freemarker\.template\.utility\.Execute",
            re.I,
        ),
        "Java expression / OGNL / EL",
        ("java", "runtime", "processbuilder", "classloader", "#", "%{", "ognl", "scriptengine", "freemarker"),
    ),
    (
        re.compile(
            r"\{\{[^}]*(?:__class__|__mro__|__subclasses__|__globals__|__builtins__|__init__|__import__|"
            r"\bconfig\b|\bself\b|request\.application|\blipsum\b|\bcycler\b|\bjoiner\b|\|attr\s*\()",
            re.I,
        ),
        "template injection (Jinja/Twig)",
        ("{{",),
    ),
    (
        re.compile(
            r"\{\{\s*\d+\s*[*+]\s*['\"]?\d+['\"]?\s*\}\}|\$\{\s*\d+\s*[*+]\s*\d+\s*\}|#\{\s*\d+\s*[*+]\s*\d+\s*\}|<%=?\s*\d+\s*[*+]\s*\d+\s*%>"
        ),
        "template expression probe",
        ("{", "<%"),
    ),
    (
        re.compile(
            r"\{%\s*(?:import|include|for\s+\w+\s+in\s+\(\)\.__class__|set\s+\w+\s*=\s*\w*\.__)", re.I
        ),
        "template statement",
        ("{%",),
    ),
    (
        re.compile(r"<%[=\s].{0,200}?(?:system|exec|`|IO\.popen|Runtime)", re.I | re.S),
        "ERB/JSP code",
        ("<%",),
    ),
    (
        re.compile(
            r"__import__\s*\(|\b(?:os|subprocess|commands|pty)\s*\.\s*(?:system|popen|Popen|call|run|"
            r"check_output|getoutput|spawn)\s*\(\s*['\"](?:[^'\"]*\b(?:id|whoami|ls|cat|sh|bash|nc|curl|wget)\b)|"
            r"\b(?:exec|eval|compile)\s*\(\s*(?:__import__|['\"]import|base64|bytes\.fromhex|chr\()",
            re.I,
        ),
        "Python code execution",
        ("__import__", "os.", "subprocess", "commands.", "pty.", "exec", "eval", "compile"),
    ),
    (
        re.compile(
            r"require\s*\(\s*['\"]child_process['\"]\s*\)|process\.mainModule|child_process\.\w+\s*\(|"
            r"constructor\s*\.\s*constructor\s*\(|\bFunction\s*\(\s*['\"]return",
            re.I,
        ),
        "JavaScript/Node code execution",
        ("child_process", "mainmodule", "constructor", "function"),
    ),
)
_QUICK = re.compile(r"[{$<%#@(]|java|ognl|classloader|php\]", re.I)


def deobfuscate_lookups(value: str) -> str:
    """Collapse Log4j lookup nesting until stable: ${${lower:j}${::-n}di:...} → ${jndi:...}."""
    for _ in range(10):
        new = _LOOKUP_CASE.sub(lambda m: m.group(1), _LOOKUP_DEFAULT.sub(lambda m: m.group(1), value))
        if new == value:
            break
        value = new
    return value


def detect(value: str, field: Field) -> str | None:
    if not _QUICK.search(value):
        return None
    if "${" in value and (_JNDI.search(value) or _JNDI.search(deobfuscate_lookups(value))):
        return "JNDI lookup (Log4Shell)"
    low = value.lower()
    for rx, reason, triggers in _RULES:
        if any(t in low for t in triggers) and rx.search(value):
            return f"code injection ({reason})"
    return None
