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


_RULES: tuple[_Rule, ...] = (
    _Rule("Private Key", ("PRIVATE KEY", "PuTTY-User-Key-File"), PrivateKeyDetector()),
    _Rule("AWS Access Key", ("AKIA", "ASIA", "ABIA", "ACCA", "A3T"), AWSKeyDetector()),
    _Rule("Azure Storage Account access key", ("AccountKey=",), AzureStorageKeyDetector()),
    _Rule("GitHub Token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), GitHubTokenDetector()),
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
_ANCHORS: tuple[bytes, ...] = tuple(sorted({a.encode() for r in _RULES for a in r.anchors}))
_GCP_MARK = re.compile(r'"type"\s*:\s*"service_account"')
_PUTTY = re.compile(r"\s*PuTTY-User-Key-File-\d+:\s*\S")
# A PEM header alone is how crypto libraries *mention* keys; a key has a base64 body right after it.
_PEM_BODY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:\s|\\n|\\r)+"
    r"(?:[A-Za-z-]+: [^\n\\]*(?:\s|\\n|\\r)+)*[A-Za-z0-9+/=]{40,}"
)


def _fingerprint(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:16]


def scan_secrets(path: str, data: bytes) -> list[SecretFinding]:
    """Findings for one file (text files up to MAX_TEXT_BYTES; binaries are skipped)."""
    if len(data) > MAX_TEXT_BYTES or b"\0" in data[:8192]:
        return []
    if not any(a in data for a in _ANCHORS):
        return []
    text = data.decode("utf-8", "replace")
    is_gcp = bool(_GCP_MARK.search(text))
    found: dict[tuple[int, str], SecretFinding] = {}
    offset = 0
    for lineno, full in enumerate(text.splitlines(keepends=True), 1):
        start, offset = offset, offset + len(full)
        line = full.rstrip("\r\n")
        if len(line) > 100_000:
            line = line[:100_000]
        for rule in _RULES:
            if not any(a in line for a in rule.anchors):
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
            kind = rule.kind
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
    return list(found.values())
