"""Path traversal and local file inclusion: climbing out of a directory or naming a system file.

The names of sensitive files come from two sources: patterns here (the OS directories `/etc`,
`/proc`, `/sys`, Windows system files, hidden directories) and the phrase lists of the installed
OWASP CRS (`lfi-os-files.data`, `restricted-files.data`, read at first use, never copied), matched
segment by segment so `../../etc/subuid`, `C:\\xampp\\apache\\conf\\httpd.conf` or a User-Agent
of `cat /proc/net/tcp` are recognised wherever they appear.
"""

from __future__ import annotations

import re
from functools import lru_cache

from garrison.cnaf.crs.data import phrases
from garrison.cnaf.fields import Field

# `../`, `..\`, `....//`, Tomcat's `..;/`, a traversal at the end (`/..`)
_UP = re.compile(r"(?:^|(?<=[/\\=:;\s'\"]))\.{2,}[;.]*\x00?[/\\]|[/\\]\.{2,};?$")
_SEMI_UP = re.compile(r"\.\.;")  # `..;/` walks up on Tomcat/Jetty while proxies read a path parameter
# Hex-escaped dots and slashes (`0x2e0x2e0x2f`): no client writes a path that way.
_HEX_ESC = re.compile(r"0x(2e|2f|5c)", re.I)
_HEX_CHARS = {"2e": ".", "2f": "/", "5c": "\\"}
_FILE_PARAMS = re.compile(
    r"file|path|page|template|include|doc|dir|folder|load|view|lang|download|src|name|img", re.I
)
_SYSTEM_FILES = re.compile(
    r"(?:^|[/\\])(?:etc[/\\](?:passwd|shadow|group|hosts|issue|hostname|sudoers|crontab|subuid|subgid|"
    r"environment|profile|bashrc|ssh[/\\])|proc[/\\](?:self|thread-self|\d+|net|sys|[a-z]*info|interrupts|"
    r"version|mounts|modules|kallsyms|kcore|partitions|devices|filesystems|loadavg|uptime|swaps|vmstat|"
    r"iomem|ioports|cmdline|config\.gz|sched_debug|timer_list)\b|sys[/\\](?:class|kernel|devices|block|bus|"
    r"firmware|fs|module|power|hypervisor)(?:[/\\]|$)|(?:boot|win|system)\.ini\b|windows[/\\]system32|"
    r"winnt[/\\]|var[/\\]log[/\\]|\.htaccess\b|\.htpasswd\b|web-inf[/\\]|\.ssh[/\\](?:id_|authorized_keys)|"
    r"\.aws[/\\]credentials|\.git[/\\](?:config|head)\b|\.env(?:$|\x00)|web\.config\b|var[/\\]vcap[/\\])",
    re.I,
)
# An absolute path into /etc, /proc or /sys as (part of) a parameter value: `cat /etc/subuid`.
_ABSOLUTE_OS_PATH = re.compile(r"(?:^|[\s=;|&<>'\"(,`])/(?:etc|proc|sys)/[\w.\-]", re.I)
# PHP/Java stream wrappers a form never carries (ssh2.* and rar:// are PHP extension wrappers).
_WRAPPERS = re.compile(
    r"\b(?:php|file|zip|phar|glob|expect|compress\.(?:zlib|bzip2)|zlib|bzip2|jar|netdoc|rar|ogg|"
    r"ssh2\.(?:shell|exec|tunnel|sftp|scp))://",
    re.I,
)
_NUL_EXT = re.compile(r"\x00.*\.\w{1,5}$|\.\w{1,5}\x00")
_QUICK = re.compile(
    r"\.\.|/etc|/proc|/sys|\.ini|\\|system32|winnt|/var/|\.ht|web-inf|\.ssh|\.aws|\.git|\.env|web\.config|"
    r"://|\x00|0x(?:2e|2f|5c)|/\.",
    re.I,
)

# Files a web app never serves, asked for by name in the URL path: backups, dumps, logs, keys.
_PROBE = re.compile(
    r"\.(?:bak|backup|old|orig|save|swp|swo|sql|sqlite3?|db|rdb|mdb|dbf|log|pem|key|p12|pfx|kdbx|tfstate|htpasswd|"
    r"passwd)(?:\.(?:gz|zip|tar|tgz|bz2|7z|rar|xz))?$",
    re.I,
)
# A hidden file or directory (a path segment starting with a dot): version control, tool and AI
# agent configuration (`/.git/`, `/.aws/`, `/.claude/`, `/.env`). `/.well-known/` is the one
# standard dot-directory a web app serves.
_HIDDEN_SEGMENT = re.compile(r"(?:^|/)(\.(?!well-known(?:/|$))[\w\-][\w.\-]*)(?:/|$)", re.I)
# Path-like tokens for the CRS file lists: runs without spaces, quotes or shell punctuation.
_TOKEN = re.compile(r"[^\s'\"<>|;&=()`,]*[/\\.][^\s'\"<>|;&=()`,]*")


@lru_cache(maxsize=1)
def _listed_files() -> tuple[frozenset[str], frozenset[str]]:
    """(OS files for any value, restricted web files for the URL path) from the installed CRS."""

    def norm(entries: frozenset[str]) -> frozenset[str]:
        return frozenset(e.replace("\\", "/").strip("/") for e in entries if e.strip("/"))

    return norm(phrases("lfi-os-files.data")), norm(phrases("restricted-files.data"))


def listed_file(value: str, names: frozenset[str]) -> str | None:
    """The first run of path segments of `value` that names a listed file (`etc/subuid`,
    `.bash_history`, `proc/net/tcp`); single names count only as dot-files or after a '/'."""
    if not names:
        return None
    for tok in _TOKEN.findall(value.lower().replace("\\", "/")):
        segs = [s for s in tok.split("/") if s not in ("", ".")]
        slash = "/" in tok
        for i in range(len(segs)):
            acc = segs[i]
            if (slash or acc.startswith(".")) and (acc in names or acc + "/" in names):
                return acc
            for seg in segs[i + 1 : i + 8]:
                acc = f"{acc}/{seg}"
                if acc in names or acc + "/" in names:
                    return acc
    return None


def _traversal(value: str, field: Field) -> str | None:
    ups = len(_UP.findall(value))
    if ups and _SEMI_UP.search(value):
        return "path traversal (..;/)"
    if "0x" in value.lower() and (ups_hex := len(_UP.findall(_HEX_ESC.sub(_hex, value)))) > ups:
        return f"hex-escaped path traversal ({ups_hex} steps up)"
    if ups >= 2 or (ups and (field.location == "filename" or _FILE_PARAMS.search(field.name))):
        return "path traversal (../)"
    return None


def _hex(m: re.Match[str]) -> str:
    return _HEX_CHARS[m.group(1).lower()]


def detect(value: str, field: Field) -> str | None:
    path = field.location == "path"
    if path and "." in value:
        if m := _PROBE.search(value):
            return f"request for a sensitive file ({m.group(0)!r})"
        if m := _HIDDEN_SEGMENT.search(value):
            return f"request for a hidden file or directory ({m.group(1)!r})"
    if not _QUICK.search(value):
        return None
    if _WRAPPERS.search(value):
        return "file inclusion through a stream wrapper"
    if _NUL_EXT.search(value):
        return "NUL-byte file name truncation"
    if not path and (reason := _traversal(value, field)):
        return reason
    if path and re.search(r"(?:^|/)\.{2,};?(?:/|$)", value):
        return "path traversal in the URL path"
    m = _SYSTEM_FILES.search(value)
    if m:
        return f"system file {m.group(0).strip('/')!r}"
    if not path and _ABSOLUTE_OS_PATH.search(value):
        return "absolute path into an OS directory"
    # parameters are CRS 930120's ground (the same list); headers and the path are not read there
    if not (path or field.location == "header") or field.name.lower() in ("referer", "origin"):
        return None
    os_files, web_files = _listed_files()
    if (hit := listed_file(value, os_files)) or (path and (hit := listed_file(value, web_files))):
        return f"system file {hit!r} (OWASP CRS file list)"
    return None
