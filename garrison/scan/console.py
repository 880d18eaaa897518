"""Small client for the console's scan endpoints (policy fetch, report upload, verdict lookup).

Credentials: HTTP basic (user/password, as twistcli-style clients use) or a bearer token. The console
uses its own CA, so `ca_cert` (PEM path) or `insecure` is needed for HTTPS.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from garrison.scan.assurance import AssurancePolicy
from garrison.scan.model import ScanReport, VerdictResponse


class ConsoleError(Exception):
    """The console could not be reached or refused the request (message says which and why)."""


@dataclass
class ConsoleConfig:
    url: str
    user: str | None = None
    password: str | None = None
    token: str | None = None
    ca_cert: str | None = None
    insecure: bool = False
    timeout: float = 30.0

    @classmethod
    def from_env(cls, url: str | None = None, **overrides: Any) -> ConsoleConfig | None:
        """Build from explicit values, falling back to GARRISON_CONSOLE_URL / _USER / _PASSWORD / _TOKEN / _CA_CERT."""
        url = url or os.environ.get("GARRISON_CONSOLE_URL")
        if not url:
            return None
        env = {
            "user": os.environ.get("GARRISON_USER"),
            "password": os.environ.get("GARRISON_PASSWORD"),
            "token": os.environ.get("GARRISON_TOKEN"),
            "ca_cert": os.environ.get("GARRISON_CA_CERT"),
        }
        env.update({k: v for k, v in overrides.items() if v is not None})
        return cls(url=url.rstrip("/"), **env)  # type: ignore[arg-type]

    def client(self) -> httpx.Client:
        auth: httpx.Auth | None = None
        headers: dict[str, str] = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        elif self.user is not None:
            auth = httpx.BasicAuth(self.user, self.password or "")
        verify: Any = True
        if self.insecure:
            verify = False
        elif self.ca_cert:
            try:
                verify = ssl.create_default_context(cafile=self.ca_cert)
            except (OSError, ssl.SSLError) as exc:
                raise ConsoleError(f"console CA certificate {self.ca_cert}: {exc}") from exc
        return httpx.Client(
            base_url=self.url.rstrip("/"), auth=auth, headers=headers, verify=verify, timeout=self.timeout
        )


def _call(cfg: ConsoleConfig, method: str, path: str, **kw: Any) -> httpx.Response:
    try:
        with cfg.client() as c:
            r = c.request(method, path, **kw)
    except httpx.HTTPError as exc:
        raise ConsoleError(f"console {cfg.url} unreachable: {exc}") from exc
    if r.status_code >= 400:
        raise ConsoleError(f"console {method} {path} answered {r.status_code}: {r.text[:300]}")
    return r


def fetch_policy(cfg: ConsoleConfig) -> AssurancePolicy:
    r = _call(cfg, "GET", "/api/v1/policies/assurance")
    body = r.json()
    if isinstance(body, dict) and isinstance(body.get("policy"), dict):
        body = body["policy"]
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "revision"}  # console bookkeeping, not policy
    try:
        return AssurancePolicy.model_validate(body)
    except ValueError as exc:
        raise ConsoleError(f"console returned an invalid assurance policy: {exc}") from exc


def post_report(cfg: ConsoleConfig, report: ScanReport) -> dict[str, Any]:
    r = _call(
        cfg,
        "POST",
        "/api/v1/scans",
        content=report.model_dump_json(),
        headers={"Content-Type": "application/json"},
    )
    try:
        out = r.json()
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {"result": out}


def fetch_verdict(cfg: ConsoleConfig, digest: str, app_name: str = "", app_guid: str = "") -> VerdictResponse:
    """Latest verdict for a digest. A 404 means "never scanned" (`unknown`); reasons and the policy's
    runtime effect are filled from the stored report and the assurance policy when the verdict row
    does not carry them."""
    params = {"digest": digest}
    if app_name:
        params["app"] = app_name
    if app_guid:
        params["app_guid"] = app_guid
    try:
        r = _call(cfg, "GET", "/api/v1/scans/verdict", params=params)
    except ConsoleError as exc:
        if " answered 404" in str(exc):
            return VerdictResponse(digest=digest, verdict="unknown")
        raise
    try:
        data = r.json()
        v = VerdictResponse.model_validate(data)
    except ValueError as exc:
        raise ConsoleError(f"console returned an unreadable verdict: {exc}") from exc
    if v.verdict == "fail" and not v.reasons and isinstance(data.get("id"), int):
        try:
            row = _call(cfg, "GET", f"/api/v1/scans/{data['id']}").json()
            body = row.get("body") if isinstance(row.get("body"), dict) else row
            v.reasons = [str(x) for x in body.get("reasons") or []]
        except (ConsoleError, ValueError, AttributeError):
            pass
    if "effect" not in data:
        with contextlib.suppress(ConsoleError):
            v.effect = fetch_policy(cfg).runtime_effect
    return v
