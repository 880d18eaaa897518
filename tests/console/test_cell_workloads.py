"""Cell defenders on the console's channel: their own bundle type, one workload per container (full
list on connect, changes after), audits keeping each container's app identity."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from garrison.channel import protocol as p
from garrison.channel.bundle import decode_bundle
from garrison.channel.client import DefenderChannelClient
from garrison.policy.audit import AuditEvent
from tests.console.defender_client import bundle_fields, enrol, enrol_msg, enrol_raw, next_of, open_defender
from tests.polling import until as _until


def _bundle(console: Any, kind: str = "") -> str:
    with console.api() as c:
        r = c.get("/defenders/install-bundle" + (f"/{kind}" if kind else ""))
        assert r.status_code == 200, r.text
        return str(r.json()["bundle"])


def _wl(cid: str, app: str, **kw: Any) -> p.Workload:
    return p.Workload(container_id=cid, app_id=app, app_name=app, org="acme", space="prod",
                      app_guid=f"{app}-guid", rule="r", protections=["exec"], **kw)  # fmt: skip


def test_bundle_types_do_not_cross(any_console: Any) -> None:
    app_token = bundle_fields(_bundle(any_console))["enrolment_token"]
    cell_token = bundle_fields(_bundle(any_console, "cell"))["enrolment_token"]

    async def scenario() -> list[p.Message]:
        as_cell = enrol_msg(app_token).model_copy(update={"defender_type": "cell"})
        as_app = enrol_msg(cell_token)
        return [await enrol_raw(any_console.ws_address, any_console.ca_pem, m) for m in (as_cell, as_app)]

    refused = asyncio.run(scenario())
    assert all(isinstance(m, p.Error) and m.code == "enrolment_refused" for m in refused), refused
    assert "for app-embedded defenders, not cell" in refused[0].message  # type: ignore[union-attr]
    assert "for cell defenders, not app-embedded" in refused[1].message  # type: ignore[union-attr]
    with any_console.api() as c:
        assert c.get("/defenders/install-bundle/vm").status_code in (404, 405)


def test_cell_reports_workloads_and_audits_name_them(any_console: Any, tmp_path: Any) -> None:
    host = "cell-" + uuid.uuid4().hex[:6]
    a, b, c_ = (uuid.uuid4().hex[:12] for _ in range(3))
    state = {"full": [_wl(a, "shop"), _wl(b, "billing", instance=2)]}
    hello = p.Hello(defender_id=f"cell-{host}", hostname=host, version="t")
    client = DefenderChannelClient(decode_bundle(_bundle(any_console, "cell")), tmp_path, hello,
                                   defender_type="cell",
                                   on_connect=lambda: [p.Workloads(full=True, up=state["full"])])  # fmt: skip
    client.start()
    try:
        assert client.wait_connected(30), client.last_error
        did = client.defender_id
        assert did.startswith(f"cell-{host}-")
        with any_console.api() as api:
            def running() -> list[dict[str, Any]]:
                return api.get(f"/defenders/{did}/workloads", params={"running": "true"}).json()

            rows = _until(lambda: (r := running()) and len(r) == 2 and r)
            assert {(r["container_id"], r["app_name"], r["instance"]) for r in rows} == {(a, "shop", 0), (b, "billing", 2)}
            d = api.get("/defenders", params={"limit": 1000}).json()
            mine = next(x for x in d if x["id"] == did)
            assert mine["defender_type"] == "cell" and mine["hostname"] == host and mine["workloads"] == 2
            assert mine["app_name"] == ""  # a cell carries no app of its own
            # changes: one container stops, another starts
            client.send_message(p.Workloads(up=[_wl(c_, "shop", instance=1)], gone=[a]))
            rows = _until(lambda: (r := running()) and {x["container_id"] for x in r} == {b, c_} and r)
            gone = api.get(f"/defenders/{did}/workloads", params={"running": "false"}).json()
            assert [g["container_id"] for g in gone] == [a] and gone[0]["gone_at"]
            # audits keep the identity of the container they are about
            for cid, app in ((b, "billing"), (c_, "shop")):
                client.submit(AuditEvent(type="process", effect="prevent", severity="high", app_id=app,
                                         app_name=app, org="acme", space="prod", rule="r", control="processes.deny",
                                         message="denied", extra={"container": cid}))  # fmt: skip
            assert client.wait_delivered(30)
            evs = api.get("/audits/runtime/app-embedded", params={"defender": did}).json()
            evs = [e for e in evs if e["defender_id"] == did]
            assert {(e["app_name"], e["extra"]["container"]) for e in evs} == {("billing", b), ("shop", c_)}
        # on reconnection the full list replaces what the console had
        state["full"] = [_wl(b, "billing", instance=2)]
        client.stop()
        client2 = DefenderChannelClient(decode_bundle(_bundle(any_console, "cell")), tmp_path, hello,
                                        defender_type="cell",
                                        on_connect=lambda: [p.Workloads(full=True, up=state["full"])])  # fmt: skip
        client2.start()
        assert client2.wait_connected(30) and client2.defender_id == did  # the same key: the same id
        with any_console.api() as api:
            _until(lambda: [x["container_id"] for x in
                            api.get(f"/defenders/{did}/workloads", params={"running": "true"}).json()] == [b])
        client2.stop()
    finally:
        client.stop()


def test_app_defender_cannot_report_workloads(any_console: Any) -> None:
    token = bundle_fields(_bundle(any_console))["enrolment_token"]

    async def scenario() -> tuple[str, p.Message]:
        ident = await enrol(any_console.ws_address, any_console.ca_pem, token)
        conn, _ = await open_defender(any_console.ws_address, any_console.ca_pem, ident, app_name="x")
        await conn.send(p.dump(p.Workloads(full=True, up=[_wl("c1", "forged")])))
        err = await next_of(conn, p.Error)
        await conn.close()
        return ident.defender_id, err

    did, err = asyncio.run(scenario())
    assert err.code == "unsupported" and "only cell defenders" in err.message  # type: ignore[union-attr]
    with any_console.api() as c:
        assert c.get(f"/defenders/{did}/workloads").json() == []
