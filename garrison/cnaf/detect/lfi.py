"""Path traversal and local file inclusion: climbing out of a directory or naming a system file."""

from __future__ import annotations

import re

from garrison.cnaf.fields import Field

_UP = re.compile(r"(?:^|(?<=[/\\=:]))\.{2,};?[/\\]")
_FILE_PARAMS = re.compile(
    r"file|path|page|template|include|doc|dir|folder|load|view|lang|download|src|name|img", re.I
)
_SYSTEM_FILES = re.compile(
    r"(?:^|[/\\])(?:etc[/\\](?:passwd|shadow|group|hosts|issue|hostname|sudoers|crontab|"
    r"environment|profile|bashrc|ssh[/\\])|proc[/\\](?:self|\d+)[/\\](?:environ|cmdline|fd|maps|mem|"
    r"status|cwd|root|exe)|(?:boot|win|system)\.ini\b|windows[/\\]system32|winnt[/\\]|"
    r"var[/\\]log[/\\]|\.htaccess\b|\.htpasswd\b|web-inf[/\\]|\.ssh[/\\](?:id_|authorized_keys)|"
    r"\.aws[/\\]credentials|\.git[/\\](?:config|head)\b|\.env(?:$|\x00)|web\.config\b|"
    r"var[/\\]vcap[/\\])",
    re.I,
)
_WRAPPERS = re.compile(r"\b(?:php|file|zip|phar|glob|expect|compress\.zlib|jar|netdoc)://", re.I)
_NUL_EXT = re.compile(r"\x00.*\.\w{1,5}$|\.\w{1,5}\x00")
_QUICK = re.compile(
    r"\.\.|/etc|/proc|\.ini|\\|system32|winnt|/var/|\.ht|web-inf|\.ssh|\.aws|\.git|\.env|web\.config|://|\x00",
    re.I,
)


# Files a web app never serves, asked for by name in the URL path: backups, dumps, logs, keys, and
# the dot-directories of version control and developer tools (scanners probe for these).
_PROBE = re.compile(
    r"\.(?:bak|backup|old|orig|save|swp|swo|sql|sqlite3?|mdb|dbf|log|pem|key|p12|pfx|kdbx|tfstate|htpasswd|"
    r"passwd)(?:\.(?:gz|zip|tar|tgz|bz2|7z|rar|xz))?$|(?:^|/)\.(?:git|svn|hg|bzr|aws|ssh|docker|kube|"
    r"continue|aider|vscode|idea|npmrc|pypirc|netrc|bash_history|terraform|env)(?:/|$)",
    re.I,
)


def detect(value: str, field: Field) -> str | None:
    if field.location == "path" and "." in value and (m := _PROBE.search(value)):
        return f"request for a sensitive file ({m.group(0).strip('/')!r})"
    if not _QUICK.search(value):
        return None
    if _WRAPPERS.search(value):
        return "file inclusion through a stream wrapper"
    if _NUL_EXT.search(value):
        return "NUL-byte file name truncation"
    if field.location != "path":
        ups = len(_UP.findall(value))
        if ups >= 2 or (ups and (field.location == "filename" or _FILE_PARAMS.search(field.name))):
            return "path traversal (../)"
    if field.location == "path" and re.search(r"(?:^|/)\.{2,}(?:/|$)", value):
        return "path traversal in the URL path"
    m = _SYSTEM_FILES.search(value)
    if m:
        return f"system file {m.group(0).strip('/')!r}"
    return None
