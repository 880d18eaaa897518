"""Start a real console and use its API."""

from __future__ import annotations

import base64
import json


def test_ping_and_version(console):
    with console.api() as c:
        assert c.get("/_ping").text == "OK"
        assert c.get("/version").json()["database"] == "sqlite"


def test_policy_roundtrip_and_bundle(console):
    before = console.policy()
    saved = console.put_policy({"rules": [{"name": "smoke", "scope": {"apps": ["smoke-*"]}}]})
    assert saved["revision"] == before["revision"] + 1
    bundle = json.loads(base64.b64decode(console.install_bundle()))
    assert bundle["ws_address"] == console.ws_address
    assert bundle["ca_pem"] == console.ca_pem
