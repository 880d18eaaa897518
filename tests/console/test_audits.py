"""Audit filters, paging, CSV export, incidents and the defender download."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import os
import tarfile
import uuid

import pytest

from tests.console.defender_client import bundle_fields, deliver

T0 = 1_790_000_000.0


@pytest.fixture(scope="module")
def loaded(any_console):
    """One app with 3 bursts of events: 10 process prevents, 4 network alerts, 3 dns infos, one late one."""
    app = "aud-" + uuid.uuid4().hex[:6]
    events = []
    for i in range(10):
        events.append({"id": uuid.uuid4().hex, "time": T0 + i, "type": "process", "effect": "prevent",
                       "severity": "high", "rule": "block-nc", "message": f"=cmd|/c calc {i}",
                       "exe": "/bin/nc", "argv": ["nc", "-e", "/bin/sh"]})  # fmt: skip
    for i in range(4):
        events.append({"id": uuid.uuid4().hex, "time": T0 + 100 + i, "type": "network", "effect": "alert",
                       "severity": "medium", "rule": "egress", "dest_ip": "203.0.113.5", "dest_port": 4444})  # fmt: skip
    for i in range(3):
        events.append({"id": uuid.uuid4().hex, "time": T0 + 200 + i, "type": "dns", "effect": "info",
                       "severity": "low"})  # fmt: skip
    # A second process burst long after the first: a separate incident.
    events.append({"id": uuid.uuid4().hex, "time": T0 + 5000, "type": "process", "effect": "prevent",
                   "severity": "critical", "rule": "block-nc"})  # fmt: skip
    token = bundle_fields(any_console.install_bundle())["enrolment_token"]
    stored = asyncio.run(deliver(any_console.ws_address, any_console.ca_pem, token, app, events))
    assert stored == len(events)
    return app


def test_filters_and_paging(any_console, loaded):
    with any_console.api() as c:
        get = lambda **p: c.get("/audits/runtime/app-embedded", params={"app": loaded, **p})  # noqa: E731
        assert get().headers["Total-Count"] == "18"
        assert len(get(type="process").json()) == 11
        assert len(get(effect="alert").json()) == 4
        assert len(get(rule="egress").json()) == 4
        assert len(get(**{"from": str(T0 + 100), "to": str(T0 + 202)}).json()) == 7
        assert len(get(**{"from": "2026-09-23T00:00:00Z"}).json()) == 0  # after T0+5000
        page1, page2 = get(limit=5, offset=0).json(), get(limit=5, offset=5).json()
        assert len(page1) == len(page2) == 5 and not {e["id"] for e in page1} & {e["id"] for e in page2}
        assert page1[0]["time"] == T0 + 5000  # newest first
        defender = page1[0]["defender_id"]
        assert get(defender=defender).headers["Total-Count"] == "18"


def test_csv_download(any_console, loaded):
    with any_console.api() as c:
        r = c.get("/audits/runtime/app-embedded/download", params={"app": loaded, "type": "process"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 11
    assert rows[0]["argv"] == "nc -e /bin/sh"
    assert rows[0]["message"].startswith("'=cmd")  # formula injection neutralised
    # times are ISO 8601 UTC, oldest first
    times = [dt.datetime.fromisoformat(row["time"]) for row in rows]
    assert all(row["time"].endswith("Z") and t.tzinfo is not None for row, t in zip(rows, times, strict=True))
    assert times == sorted(times)


def test_incidents(any_console, loaded):
    with any_console.api() as c:
        inc = c.get("/incidents", params={"app": loaded}).json()
    kinds = sorted((i["type"], i["count"]) for i in inc)
    assert kinds == [("network", 4), ("process", 1), ("process", 10)]  # dns "info" is not an incident
    newest = inc[0]
    assert (
        newest["type"] == "process" and newest["severity"] == "critical" and newest["rules"] == ["block-nc"]
    )


def test_one_incident_with_its_audits(any_console, loaded):
    """The incident page's source: one incident by id with exactly its own audits (each naming its
    defender and pid, for the process tree); a later incident of the same app and type is not mixed in."""
    with any_console.api() as c:
        inc = c.get("/incidents", params={"app": loaded, "type": "process"}).json()
        older = next(i for i in inc if i["count"] == 10)
        one = c.get(f"/incidents/{older['id']}").json()
        missing = c.get("/incidents/" + "0" * 24)
        bad = c.get("/incidents/not-hex")
    assert one["id"] == older["id"] and one["count"] == 10 and len(one["audits"]) == 10
    assert [a["time"] for a in one["audits"]] == sorted((T0 + i for i in range(10)), reverse=True)
    assert {a["defender_id"] for a in one["audits"]} == set(one["defenders"])
    assert missing.status_code == 404 and "no incident" in missing.json()["detail"]
    assert bad.status_code == 422


def test_same_app_name_in_two_spaces_makes_two_incidents(any_console):
    """Issue 18.7 in incidents: two apps called the same in different spaces are different apps, so
    their alerts at the same time are two incidents, each with only its own audits."""
    from garrison.channel import protocol as p
    from tests.console.defender_client import enrol, next_of, open_defender

    token = bundle_fields(any_console.install_bundle())["enrolment_token"]
    app = "twin-" + uuid.uuid4().hex[:6]

    async def send(space: str, n: int) -> None:
        ident = await enrol(any_console.ws_address, any_console.ca_pem, token)
        conn, _ = await open_defender(
            any_console.ws_address, any_console.ca_pem, ident, app_name=app, org="acme", space=space
        )
        events = [{"id": uuid.uuid4().hex, "time": T0 + i, "type": "process", "effect": "alert",
                   "message": f"{space} {i}"} for i in range(n)]  # fmt: skip
        await conn.send(p.dump(p.Events(seq=1, events=events)))
        assert (await next_of(conn, p.Ack)).stored == n
        await conn.close()

    asyncio.run(send("dev", 2))
    asyncio.run(send("prod", 3))
    with any_console.api() as c:
        inc = c.get("/incidents", params={"app": app}).json()
        assert sorted((i["space"], i["count"]) for i in inc) == [("dev", 2), ("prod", 3)]
        prod = next(i for i in inc if i["space"] == "prod")
        one = c.get(f"/incidents/{prod['id']}").json()
    assert [a["message"] for a in one["audits"]] == ["prod 2", "prod 1", "prod 0"]
    assert one["org"] == "acme" and len(one["defenders"]) == 1


def test_defender_image_launcher(console):
    with console.api() as c:
        r = c.get("/images/garrison_defender_app_embedded.tar.gz")
    assert r.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        member = tar.getmember("defender")
        assert member.mode & 0o111
        assert tar.extractfile(member).read().startswith(b"#!/bin/sh")  # type: ignore[union-attr]


def test_defender_image_ships_prebuilt_binary(console_factory, tmp_path):
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "defender").write_bytes(b"\x7fELF-pretend-binary")
    os.chmod(dist / "defender", 0o755)
    c2 = console_factory(env={"GARRISON_DEFENDER_DIST": str(dist)})
    with c2.api() as c:
        r = c.get("/images/garrison_defender_app_embedded.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        member = tar.getmember("defender")
        assert member.mode & 0o111
        assert tar.extractfile(member).read() == b"\x7fELF-pretend-binary"  # type: ignore[union-attr]


def test_defender_image_ships_onedir_build_and_tarball(console_factory, tmp_path):
    onedir = tmp_path / "onedir"
    (onedir / "defender_lib").mkdir(parents=True)
    (onedir / "defender").write_bytes(b"\x7fELF-launcher")
    os.chmod(onedir / "defender", 0o755)
    (onedir / "defender_lib" / "libpython.so").write_bytes(b"lib")
    c2 = console_factory(env={"GARRISON_DEFENDER_DIST": str(onedir)})
    with c2.api() as c:
        r = c.get("/images/garrison_defender_app_embedded.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        assert tar.extractfile("defender").read() == b"\x7fELF-launcher"  # type: ignore[union-attr]
        assert tar.extractfile("defender_lib/libpython.so").read() == b"lib"  # type: ignore[union-attr]
        assert all(m.uid == 0 and not m.name.startswith(("/", "..")) for m in tar.getmembers())

    built = tmp_path / "dist"
    built.mkdir()
    (built / "garrison_defender_app_embedded.tar.gz").write_bytes(r.content)
    c3 = console_factory(env={"GARRISON_DEFENDER_DIST": str(built)})
    with c3.api() as c:
        assert c.get("/images/garrison_defender_app_embedded.tar.gz").content == r.content


def test_metrics(any_console, loaded):
    with any_console.api() as c:
        assert c.get(any_console.url + "/metrics", auth=None).status_code == 401  # token needed
        text = c.get(any_console.url + "/metrics").text
    assert "garrison_events_ingested_total" in text and "garrison_defenders_connected" in text
