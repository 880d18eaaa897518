"""Secret detection: detect-secrets' precise plugins plus rules for what they lack; values never leave.

A cheap literal pre-filter (bytes.find per anchor) runs on every text file; only lines containing an
anchor reach the regex plugins, which keeps a 200 MB droplet scan close to decompression speed. The
noisy detect-secrets plugins (keyword, entropy, basic-auth, JWT, ...) are left out: a staging gate
must not fail builds on every URL with a password placeholder in a library README.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector

from garrison.scan.envfile import env_credentials, is_env_file
from garrison.scan.model import SecretFinding

MAX_TEXT_BYTES = 4 << 20
# Third-party dependency trees are not where an app's own credentials live, and library test
# fixtures there are full of sample keys (the same default as Trivy's built-in allow rules).
_DEP_DIRS = re.compile(
    r"(^|/)(site-packages|dist-packages|node_modules|bower_components|vendor/bundle|gems/[^/]+/gems"
    r"|BOOT-INF/lib|WEB-INF/lib|\.git)/"
)
_BINARY_EXT = frozenset(
    [
        ".so",
        ".pyc",
        ".pyo",
        ".class",
        ".jar",
        ".war",
        ".ear",
        ".zip",
        ".gz",
        ".tgz",
        ".bz2",
        ".xz",
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".ico",
        ".woff",
        ".woff2",
        ".ttf",
        ".otf",
        ".eot",
        ".pdf",
        ".mp3",
        ".mp4",
        ".wasm",
        ".a",
        ".o",
        ".dylib",
        ".dll",
        ".exe",
        ".bin",
        ".node",
        ".whl",
        ".egg",
        ".db",
        ".sqlite",
    ]
)


def in_dependency_tree(path: str) -> bool:
    return _DEP_DIRS.search(path) is not None


def secret_candidate(path: str, *, include_deps: bool = False) -> bool:
    """Cheap path test: is this file worth a secrets pass?"""
    dot = path.rfind(".")
    if dot > path.rfind("/") and path[dot:].lower() in _BINARY_EXT:
        return False
    return include_deps or not _DEP_DIRS.search(path)


@dataclass(frozen=True)
class _Rule:
    kind: str
    anchors: tuple[str, ...]
    plugin: Any = None  # detect-secrets plugin instance
    regex: re.Pattern[str] | None = None  # our own rule when plugin is None
    icase: bool = False  # anchors compared case-insensitively


# An AWS secret access key is 40 base64 characters with nothing to anchor on but its name nearby;
# detect-secrets only finds it in quotes, and our AKIA pre-filter dropped it altogether. Unquoted
# INI (`~/.aws/credentials`), .env, YAML and JSON (`"SecretAccessKey": ...`) forms are all common.
_AWS_SECRET = re.compile(
    r"(?i)(?:aws.{0,20}?(?:secret|key|pwd|pw|password|pass|token)|secret.?access.?key)"
    r"""[^=:\n]{0,20}?["']?\s*(?:=|:|=>)\s*["']?([0-9a-zA-Z/+]{40})(?![0-9a-zA-Z/+=])"""
)
# GitHub fine-grained personal access tokens: github_pat_<22>_<59>
_GITHUB_PAT = re.compile(r"github_pat_[0-9A-Za-z]{22}_[0-9A-Za-z]{59}(?![0-9A-Za-z])")


_RULES: tuple[_Rule, ...] = (
    _Rule("Private Key", ("PRIVATE KEY", "PuTTY-User-Key-File"), PrivateKeyDetector()),
    _Rule("AWS Access Key", ("AKIA", "ASIA", "ABIA", "ACCA", "A3T"), AWSKeyDetector()),
    _Rule("Azure Storage Account access key", ("AccountKey=",), AzureStorageKeyDetector()),
    _Rule("GitHub Token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), GitHubTokenDetector()),
    _Rule("GitHub Fine-grained Token", ("github_pat_",), regex=_GITHUB_PAT),
    _Rule("AWS Secret Access Key", ("aws", "secret"), regex=_AWS_SECRET, icase=True),
    _Rule(
        "GitLab Token",
        (
            "glpat-",
            "gldt-",
            "glft-",
            "glsoat-",
            "glrt-",
            "GR1348941",
            "glcbt-",
            "glimt-",
            "glptt-",
            "glagent-",
            "gloas-",
        ),
        GitLabTokenDetector(),
    ),
    _Rule("Slack Token", ("xox", "hooks.slack.com"), SlackDetector()),
    _Rule("Stripe Access Key", ("k_live_",), StripeDetector()),
    _Rule("SendGrid API Key", ("SG.",), SendGridDetector()),
    _Rule("PyPI Token", ("pypi-AgE",), PypiTokenDetector()),
    _Rule("NPM token", (":_authToken",), NpmDetector()),
    _Rule("OpenAI Token", ("T3BlbkFJ",), OpenAIDetector()),
    _Rule("Square OAuth Secret", ("sq0csp-",), SquareOAuthDetector()),
    _Rule("Google API Key", ("AIza",), regex=re.compile(r"AIza[0-9A-Za-z\-_]{35}")),
    _Rule(
        "GCP Service Account Key",
        ('"private_key"',),
        regex=re.compile(r'"private_key"\s*:\s*"(-----BEGIN[^"]{40,})"'),
    ),
)
# one pass over the bytes decides whether a file can hold a secret at all
# Literal anchors, searched with str/bytes find (memchr speed; a regex alternation of 40 literals is
# ten times slower in CPython). Rules matched case-insensitively are anchored on their usual spellings.
_ICASE_SPELLINGS = ("aws", "AWS", "Aws", "secret", "Secret", "SECRET")
_ANCHORS: tuple[str, ...] = tuple(
    sorted({a for r in _RULES if not r.icase for a in r.anchors} | set(_ICASE_SPELLINGS))
)
_ANCHORS_BYTES: tuple[bytes, ...] = tuple(a.encode() for a in _ANCHORS)


def _has_anchor(data: bytes) -> bool:
    return any(a in data for a in _ANCHORS_BYTES)


def _anchored_lines(text: str) -> list[tuple[int, int, str]]:
    """(line number, start offset, line) of the lines holding an anchor: only those reach the rules,
    so a big file with a few anchors costs a few `find` passes, not a Python loop over every line."""
    starts: set[int] = set()
    for a in _ANCHORS:
        i = text.find(a)
        while i >= 0:
            start = text.rfind("\n", 0, i) + 1
            starts.add(start)
            nxt = text.find("\n", i)
            if nxt < 0:
                break
            i = text.find(a, nxt)
    out: list[tuple[int, int, str]] = []
    lineno, counted_to = 1, 0
    for start in sorted(starts):
        lineno += text.count("\n", counted_to, start)
        counted_to = start
        end = text.find("\n", start)
        line = text[start : end if end >= 0 else len(text)].rstrip("\r")
        out.append((lineno, start, line[:100_000]))
    return out


_GCP_MARK = re.compile(r'"type"\s*:\s*"service_account"')
_PUTTY = re.compile(r"\s*PuTTY-User-Key-File-\d+:\s*\S")
# A PEM header alone is how crypto libraries *mention* keys; a key has a base64 body right after it.
_PEM_BODY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:\s|\\n|\\r)+"
    r"(?:[A-Za-z-]+: [^\n\\]*(?:\s|\\n|\\r)+)*[A-Za-z0-9+/=]{40,}"
)


def _fingerprint(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:16]


def _plausible_key(value: str) -> bool:
    """A real secret key is random: mixed case and a digit or symbol, not one repeated character."""
    return (
        any(c.islower() for c in value)
        and any(c.isupper() for c in value)
        and any(c.isdigit() or c in "/+" for c in value)
        and len(set(value)) > 10
    )


def scan_secrets(path: str, data: bytes) -> list[SecretFinding]:
    """Findings for one file (text files up to MAX_TEXT_BYTES; binaries are skipped)."""
    if len(data) > MAX_TEXT_BYTES or b"\0" in data[:8192]:
        return []
    env = is_env_file(path)
    if not env and not _has_anchor(data):
        return []
    text = data.decode("utf-8", "replace")
    found: dict[tuple[int, str], SecretFinding] = {}
    if env:
        for lineno, kind, value in env_credentials(text):
            found.setdefault(
                (lineno, kind),
                SecretFinding(kind=kind, path=path, line=lineno, fingerprint=_fingerprint(value)),
            )
        if not _has_anchor(data):
            return list(found.values())
    is_gcp = bool(_GCP_MARK.search(text))
    for lineno, start, line in _anchored_lines(text):
        lower = None
        for rule in _RULES:
            if rule.icase:
                lower = lower if lower is not None else line.lower()
                if not any(a in lower for a in rule.anchors):
                    continue
            elif not any(a in line for a in rule.anchors):
                continue
            values: list[str] = []
            if rule.plugin is not None:
                values = [
                    s.secret_value or ""
                    for s in rule.plugin.analyze_line(filename=path, line=line, line_number=lineno)
                ]
            elif rule.regex is not None:
                if rule.kind == "GCP Service Account Key" and not is_gcp:
                    continue
                values = [m.group(m.lastindex or 0) for m in rule.regex.finditer(line)]
                if rule.kind == "AWS Secret Access Key":
                    values = [v for v in values if _plausible_key(v)]
            kind = rule.kind
            if kind == "AWS Access Key" and values and all(len(v) == 40 for v in values):
                kind = "AWS Secret Access Key"  # detect-secrets' quoted secret-key form
            if kind == "Private Key" and values:
                if _PUTTY.match(line):
                    values = [text[start : start + 4096]]
                else:
                    at = text.find("-----BEGIN", start)
                    pem = _PEM_BODY.match(text, at, at + 4096) if at >= 0 else None
                    if pem is None:
                        continue
                    values = [pem.group(0)]  # fingerprint the key material, not the header
            if kind == "Private Key" and is_gcp:
                kind = "GCP Service Account Key"
            for v in values:
                found.setdefault(
                    (lineno, kind),
                    SecretFinding(kind=kind, path=path, line=lineno, fingerprint=_fingerprint(v)),
                )
    # a line a specific rule recognised (AWS, GitHub ...) needs no generic .env finding as well
    specific = {ln for ln, k in found if not k.endswith(" in .env")}
    return [f for (ln, k), f in found.items() if not (k.endswith(" in .env") and ln in specific)]
