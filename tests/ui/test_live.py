"""The live audit stream (Server-Sent Events) the web UI uses, on SQLite and PostgreSQL: filtered
audits pushed as they are stored, defender counts, and resuming from the cursor after a disconnect."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from garrison.channel.bundle import decode_bundle
from garrison.channel.client import DefenderChannelClient
from garrison.channel.protocol import Hello
from garrison.policy.audit import AuditEvent

pytestmark = pytest.mark.slow
STREAM = "/audits/runtime/app-embedded/stream"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def any_console(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("console" if request.param == "sqlite" else "console_pg")


def _defender(console: Any, folder: Path, app: str) -> DefenderChannelClient:
    client = DefenderChannelClient(
        decode_bundle(console.install_bundle()),
        folder,
        Hello(app_id=f"{app}-id", app_name=app, org="o", space="s", instance=0, version="t"),
    )
    client.start()
    assert client.wait_connected(30), client.last_error
    return client


@pytest.fixture(scope="module")
def defender(any_console: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DefenderChannelClient]:
    client = _defender(any_console, tmp_path_factory.mktemp("defender"), "live-app")
    yield client
    client.stop()


@pytest.fixture(scope="module")
def other_defender(
    any_console: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DefenderChannelClient]:
    """Another app's defender: a defender's audits are stamped with the app it enrolled for."""
    client = _defender(any_console, tmp_path_factory.mktemp("other-defender"), "other")
    yield client
    client.stop()


def events(resp: httpx.Response) -> Iterator[tuple[str, str | None, Any]]:
    """(event, id, data) of each SSE block; a comment (keep-alive) comes as ("comment", None, None)."""
    name, eid, data = "message", None, ""
    for line in resp.iter_lines():
        if line == "":
            if data or name != "message":
                yield name, eid, json.loads(data) if data else None
            name, eid, data = "message", None, ""
        elif line.startswith(":"):
            yield "comment", None, None  # a keep-alive: lets the reader check its deadline
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "id":
                eid = value
            elif field == "data":
                data += value


def collect(
    resp: httpx.Response, want: set[str], deadline_s: float = 30
) -> tuple[dict[str, Any], str | None, Any]:
    """Read until every message in `want` arrived; return audits by message, the last id, defenders data."""
    got: dict[str, Any] = {}
    last_id, defenders = None, None
    deadline = time.monotonic() + deadline_s
    for name, eid, data in events(resp):
        last_id = eid or last_id
        if name == "audit":
            got[data["message"]] = data
        elif name == "defenders":
            defenders = data
        if want <= set(got) or time.monotonic() > deadline:
            break
    return got, last_id, defenders


def test_stream_pushes_filtered_audits_and_resumes(
    any_console: Any, defender: DefenderChannelClient, other_defender: DefenderChannelClient, tmp_path: Path
) -> None:
    tag = f"{time.time():.6f}"
    with any_console.api() as api, api.stream("GET", STREAM, params={"app": "live-app"}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        other_defender.submit(
            AuditEvent(type="process", effect="alert", app_name="other", message=f"other-{tag}")
        )
        defender.submit_many(
            [
                AuditEvent(type="process", effect="alert", app_name="live-app", message=f"a{i}-{tag}")
                for i in range(3)
            ]
        )
        got, cursor, defenders = collect(resp, {f"a{i}-{tag}" for i in range(3)})
    assert set(got) == {f"a{i}-{tag}" for i in range(3)}  # the other app's audit was not sent
    assert defenders is not None and defenders["connected"] >= 1
    assert cursor is not None and cursor.isdigit()

    # disconnected: two more audits; resuming from the cursor delivers them (and nothing twice on SQLite)
    defender.submit_many(
        [
            AuditEvent(type="dns", effect="prevent", app_name="live-app", message=f"b{i}-{tag}")
            for i in range(2)
        ]
    )
    with any_console.api() as api:
        deadline = time.monotonic() + 30
        while (
            api.get("/audits/runtime/app-embedded", params={"app": "live-app", "type": "dns"}).headers[
                "total-count"
            ]
            != "2"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with api.stream("GET", STREAM, params={"app": "live-app", "after": cursor}) as resp:
            got2, _, _ = collect(resp, {f"b0-{tag}", f"b1-{tag}"})
    assert {f"b0-{tag}", f"b1-{tag}"} <= set(got2)
    if any_console.db_url is None:
        assert set(got2) == {f"b0-{tag}", f"b1-{tag}"}


def test_stream_refused_without_valid_credentials(any_console: Any) -> None:
    with httpx.Client(
        base_url=any_console.url + "/api/v1", verify=any_console.ssl_context(), timeout=10
    ) as c:
        assert c.get(STREAM).status_code == 401
        assert c.get(STREAM, headers={"authorization": "Bearer gar_not-a-token"}).status_code == 401


def test_list_cursor_hands_over_to_the_stream(any_console: Any, defender: DefenderChannelClient) -> None:
    """An audit stored between reading the list and opening the stream is streamed, not lost."""
    tag = f"{time.time():.6f}"
    with any_console.api() as api:
        listed = api.get("/audits/runtime/app-embedded", params={"app": "live-app", "limit": 1})
        cursor = listed.headers["stream-cursor"]
        assert cursor.isdigit()
        defender.submit_many(
            [AuditEvent(type="network", effect="alert", app_name="live-app", message=f"gap-{tag}")]
        )
        deadline = time.monotonic() + 30
        while (
            api.get("/audits/runtime/app-embedded", params={"app": "live-app", "type": "network"}).json()
            == []
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with api.stream("GET", STREAM, params={"app": "live-app", "after": cursor}) as resp:
            got, _, _ = collect(resp, {f"gap-{tag}"})
    assert f"gap-{tag}" in got
