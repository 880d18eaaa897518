"""Credentials in dotenv files (`.env`, `.env.production`, `app.env`, `.envrc`), which droplets often
carry: `PASSWORD=`/`*_SECRET=`/`*_TOKEN=` assignments and URLs with a password (`DATABASE_URL=`).

Low false positives come from three rules: only real dotenv files (not `.env.example` and friends),
only names that *end* in a credential word (`PASSWORD_MIN_LENGTH` is a setting, not a password), and
no placeholder values (empty, `changeme`, `<...>`, `${VAR}`, `your_token_here`, `xxxx` ...).
"""

from __future__ import annotations

import re

_TEMPLATES = frozenset(
    {"example", "sample", "template", "dist", "defaults", "default", "tmpl", "tpl", "schema"}
)
_ASSIGN = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*[=:]\s*(.*?)\s*$")
_SECRET_NAME = re.compile(
    r"(?i)(?:^|_)(?:pass|password|passwd|pwd|secret|token|api_?key|access_?key|private_?key|secret_?key"
    r"|client_?secret|auth_?token|credentials?|passphrase|signing_?key|encryption_?key|master_?key)$"
)
_URL_NAME = re.compile(r"(?i)(?:^|_)(?:url|uri|dsn|connection(?:_string)?|database|redis|amqp|mongo(?:db)?)$")
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:([^@\s/]+)@[^\s]+")
_PLACEHOLDER = re.compile(
    r"(?i)^(?:|changeme|change_?me|change-me|password|passwd|secret|token|none|null|nil|undefined|true"
    r"|false|todo|tbd|fixme|dummy|test|testing|example|sample|foo|bar|default|empty|redacted|hidden"
    r"|x+|\*+|\.+|-+|0+|(?:your|my|insert|enter|replace|put)[_\- ].*|.*[_\-](?:here|placeholder)"
    r"|<[^>]*>|\[[^\]]*\]|\{\{.*\}\}|\$\{.*\}|\$[A-Za-z_][A-Za-z0-9_]*|%\(.*\)s|%[A-Z_]+%)$"
)


def is_env_file(path: str) -> bool:
    base = path.rsplit("/", 1)[-1].rsplit("!/", 1)[-1]
    if base == ".envrc":
        return True
    if base == ".env":
        return True
    if base.startswith(".env."):
        return not (set(base[5:].lower().split(".")) & _TEMPLATES)
    if base.endswith(".env") and len(base) > 4:
        return not (set(base[:-4].lower().replace("-", ".").replace("_", ".").split(".")) & _TEMPLATES)
    return False


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"`":
        return value[1:-1]
    if value and value[0] not in "'\"`":
        value = re.split(r"\s+#", value, maxsplit=1)[0]  # trailing comment
    return value.strip()


def _is_placeholder(value: str) -> bool:
    return bool(_PLACEHOLDER.match(value)) or value.isdigit() or len(value) < 4


def env_credentials(text: str) -> list[tuple[int, str, str]]:
    """(line, kind, value) for each credential assignment in a dotenv file."""
    out: list[tuple[int, str, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        m = _ASSIGN.match(line)
        if not m:
            continue
        name, value = m[1], _unquote(m[2])
        url = _URL_PASSWORD.match(value)
        if url and not _is_placeholder(url[1]):
            out.append((lineno, "URL with password in .env", value))
        elif _SECRET_NAME.search(name) and not url and not _is_placeholder(value):
            kind = "Password in .env" if re.search(r"(?i)pass|pwd", name) else "Secret in .env"
            out.append((lineno, kind, value))
        elif _URL_NAME.search(name) and url is None and "://" in value:
            continue  # a URL without a password
    return out
