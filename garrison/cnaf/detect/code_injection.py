"""Code injection: PHP, Java (OGNL/EL/Spring), JNDI lookups (Log4Shell), server-side templates.

Log4j lookups are de-obfuscated first (`${lower:j}`, `${::-n}`, `${env:X:-d}`), since that nesting
is how real Log4Shell payloads evaded string matching.
"""

from __future__ import annotations

import re
from functools import lru_cache

from garrison.cnaf.crs.data import phrases
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
            r"<\?\s*(?:php\b|=)|<\?\s+(?:[$@]|\w+\s*\(|echo\b|print\b|include|require)|;\s*\?>\s*$|<\?\s*$|"
            # `<?xml` that opens no XML declaration (`<?xml :echo 1;`): a short open tag
            r"<\?xml(?!\s+(?:version|encoding|standalone)\s*=|-stylesheet\b|\s*\?>)\s*[^\w\s-]",
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
    # PHP variable variables: `$ { CONSTANT }` (a space no shell or template allows), `${'name'}`
    (re.compile(r"\$\s+\{\s*\w|\$\{\s*['\"]\w+['\"]\s*\}"), "PHP variable variable", ("$",)),
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


# A file name ending in (or carrying as an inner extension: `x.php.jpg`, `x.phar .png`) a
# server-side script type: uploaded, the web server would run it.
_SCRIPT_UPLOAD = re.compile(
    r"\.(?:php\d*|phtml|phar|pht|phpt|phps|pgif|inc|shtml|asp|aspx|ashx|asmx|asa|cer|jspx?|jspf|cfm|cgi|war)"
    r"(?:[.\s]*$|[.\s]+[a-z0-9]{1,5}[.\s]*$)|^\.(?:htaccess|user\.ini)$|(?:^|[/\\])sess_[\w,\-]{16,}$",
    re.I,
)
# Request headers some upload APIs read the file name from (CRS reads the same ones).
FILENAME_HEADERS = frozenset({"x-filename", "x_filename", "x.filename", "x-file-name"})


def script_upload(value: str) -> str | None:
    """An upload file name the web server would execute (PHP/ASP/JSP) or a PHP session file."""
    m = _SCRIPT_UPLOAD.search(value.strip())
    if m is None:
        return None
    return (
        "code injection (PHP session file upload)"
        if "sess_" in m.group(0).lower()
        else (f"code injection (script file upload {m.group(0).strip()!r})")
    )


_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]{2,})\s*\(")
# PHP extension prefixes of function names newer than the installed CRS lists (`pg_`, `sodium_`…)
_PHP_EXT_PREFIX = re.compile(
    r"(?:pg|ldap|tidy|zend|sodium|mysqli|mysql|openssl|posix|pcntl|mb|iconv|imap|ftp|ssh2|opcache|apcu|"
    r"libxml|simplexml|xmlrpc|finfo|exif|mcrypt|dba|oci|odbc|ibase|fbird|sqlsrv|sqlite|grapheme|numfmt|"
    r"msgfmt|datefmt|collator|stream|proc|array|str|preg|curl|gz|bz|zip|ob|func|get_defined|ini)_[a-z0-9_]+\Z"
)


@lru_cache(maxsize=1)
def _php_functions() -> frozenset[str]:
    """PHP function names of the installed CRS (933150, and the 933151 ones with an underscore:
    `foreach`, `count`, `date` also name functions of other languages)."""
    return phrases("php-function-names-933150.data") | frozenset(
        n for n in phrases("php-function-names-933151.data") if "_" in n
    )


@lru_cache(maxsize=1)
def _php_ini_sections() -> frozenset[str]:
    """The section prefixes of php.ini directives in the installed CRS list (`session.`, `opcache.`)."""
    return frozenset(d.split(".", 1)[0] for d in phrases("php-config-directives.data") if "." in d)


_INI_DIRECTIVE = re.compile(r"(?:^|[\s;&])([a-z][a-z0-9_]*)\.[a-z_][a-z0-9_.]*\s*=", re.I)


def _php_call(value: str) -> str | None:
    """A PHP function name with its call parenthesis (`array_diff (`, `pg_enter_pipeline_mode(`)."""
    names = _php_functions()
    for m in _CALL.finditer(value):
        name = m.group(1).lower()
        if name in names or ("_" in name and _PHP_EXT_PREFIX.match(name)):
            return f"code injection (PHP function call {name}())"
    return None


def detect(value: str, field: Field) -> str | None:
    upload = field.location == "filename" or (
        field.location == "header" and field.name.lower() in FILENAME_HEADERS
    )
    if upload and (reason := script_upload(value)):
        return reason
    m = _INI_DIRECTIVE.search(value) if "=" in value and "." in value else None
    if m is not None and m.group(1).lower() in _php_ini_sections():
        return "code injection (PHP configuration directive)"
    if not _QUICK.search(value):
        return None
    if "(" in value and value.count("\n", 0, 4096) < 2 and (reason := _php_call(value)):
        return reason
    if "${" in value and (_JNDI.search(value) or _JNDI.search(deobfuscate_lookups(value))):
        return "JNDI lookup (Log4Shell)"
    low = value.lower()
    for rx, reason, triggers in _RULES:
        if any(t in low for t in triggers) and rx.search(value):
            return f"code injection ({reason})"
    return None
