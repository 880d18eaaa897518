"""Learning over the real channel and API: profiles from defenders' reports (idempotent, across
instances), service identities, the discovery map, proposal → accept → enforce, rules from edges,
roles and the management audit. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from garrison.channel import protocol as p
from garrison.console.api.learning import DiscoveryMap
from garrison.policy.evaluate import decide_bind, decide_connect
from garrison.policy.model import Rule
from tests.console.defender_client import bundle_fields, enrol, next_of, open_defender

T0 = time.time() - 100


def _seen(**kw: Any) -> dict[str, Any]:
    return {"count": 3, "first_seen": T0, "last_seen": T0 + 10, **kw}


def _report(run: str, **kw: Any) -> p.ProfileReport:
    return p.ProfileReport(run_id=run, controls=["processes", "network", "listening", "dns"], **kw)


async def _send(console: Any, token: str, app: str, instance: int, reports: list[p.ProfileReport]) -> None:
    ident = await enrol(console.ws_address, console.ca_pem, token, requested_id=f"{app}-{instance}")
    conn, _ = await open_defender(
        console.ws_address, console.ca_pem, ident, app_name=app, org="o1", space="s1", instance=instance
    )
    try:
        for r in reports:
            await conn.send(p.dump(r))
        # the read loop is sequential: once this batch is acked, the reports before it are stored
        await conn.send(p.dump(p.Events(seq=1, events=[])))
        await next_of(conn, p.Ack)
    finally:
        await conn.close()


def _by_app(rows: list[dict[str, Any]], app: str) -> dict[str, Any]:
    return next(r for r in rows if r["app"] == app)


def test_profiles_map_review_enforce(any_console):
    sfx = uuid.uuid4().hex[:6]
    front, billing, inv = f"frontend-{sfx}", f"billing-{sfx}", f"inventory-{sfx}"
    token = bundle_fields(any_console.install_bundle())["enrolment_token"]
    front_report = _report(
        "run-a",
        addresses=["10.1.0.1"],
        processes=[_seen(exe="/usr/bin/python3", argv_shape=["app.py", "--port", "<n>"], parent="/bin/sh")],
        destinations=[
            _seen(ip="10.1.0.2", port=8080, protocol="tcp"),  # billing's own address and port
            _seen(ip="10.9.9.9", port=443, protocol="tcp", names=[f"{inv}.example.com"]),  # inventory's route
            _seen(ip="93.184.216.34", port=443, protocol="tcp", names=["api.example.org"]),
            _seen(ip="8.8.4.4", port=53, protocol="udp"),
        ],
        dns=[_seen(name="api.example.org"), _seen(name=f"{inv}.example.com")],
        listening=[_seen(port=8080, protocol="tcp")],
    )

    async def learn() -> None:
        await _send(any_console, token, billing, 0, [_report(
            "b", addresses=["10.1.0.2"], routes=[f"{billing}.apps.internal"], listening=[_seen(port=8080)])])  # fmt: skip
        await _send(any_console, token, inv, 0, [_report(
            "i", addresses=["10.1.0.3"], routes=[f"{inv}.example.com"], listening=[_seen(port=8080)])])  # fmt: skip
        # instance 0 sends its report twice (a re-send changes nothing); instance 1 sees the same
        await _send(any_console, token, front, 0, [front_report, front_report])
        await _send(any_console, token, front, 1, [front_report])

    asyncio.run(learn())
    with any_console.api() as api:
        rows = api.get("/profiles", params={"org": "o1", "space": "s1"}).json()
        prof = _by_app(rows, front)
        assert prof["state"] == "learning"
        assert prof["instances"] == 2
        assert prof["counts"] == {"process": 1, "destination": 4, "dns": 2, "listen": 1}
        detail = api.get(f"/profiles/{prof['id']}").json()
        assert detail["processes"][0]["count"] == 6  # 3 per instance, the re-send not counted
        assert detail["processes"][0]["instances"] == 2
        services = {d["ip"]: d["service"] for d in detail["destinations"]}
        assert services["10.1.0.2"]["kind"] == "app" and services["10.1.0.2"]["app"] == billing
        assert services["10.9.9.9"]["kind"] == "route" and services["10.9.9.9"]["app"] == inv
        assert services["93.184.216.34"] == {
            "kind": "dns", "name": "api.example.org", "label": "api.example.org", "id": "dns:api.example.org"
        }  # fmt: skip
        assert services["8.8.4.4"]["kind"] == "external"

        graph = api.get("/discovery/map", params={"org": "o1", "app": front}).json()
        DiscoveryMap.model_validate(graph)  # served without a second validation pass: keep it honest
        src = f"app:o1/s1/{front}"
        edges = {e["target"]: e for e in graph["edges"] if e["source"] == src}
        assert set(edges) == {f"app:o1/s1/{billing}", f"app:o1/s1/{inv}", "dns:api.example.org", "ip:8.8.4.4"}
        assert edges[f"app:o1/s1/{billing}"]["ports"] == ["8080/tcp"]
        assert edges[f"app:o1/s1/{billing}"]["count"] == 6
        assert not any(e["denied_by_current_policy"] or e["new_since_accept"] for e in edges.values())
        node_kinds = {n["id"]: n["kind"] for n in graph["nodes"]}
        assert node_kinds[f"app:o1/s1/{billing}"] == "app" and node_kinds["ip:8.8.4.4"] == "external"
        assert graph["groups"][0]["org"] == "o1"

        prop = api.get(f"/profiles/{prof['id']}/proposal").json()
        rule = prop["rule"]
        assert rule["processes"]["allow"] == ["/usr/bin/python3"]
        assert set(rule["dns"]["allow"]) == {"api.example.org", f"{inv}.example.com"}
        cidrs = {
            (t["cidr"], t["protocol"], t["ports"][0]["start"]) for t in rule["network"]["outbound"]["allow"]
        }
        assert cidrs == {("10.1.0.2/32", "tcp", 8080), ("8.8.4.4/32", "udp", 53)}
        assert rule["network"]["listening"]["allow"] == [{"start": 8080, "end": 8080}]
        assert {d["path"] for d in prop["diff"]} >= {"processes.allow", "dns.allow", "network.outbound.allow"}

        # roles: an auditor reads but cannot accept
        any_console.create_user(f"aud-{sfx}", "pw-" + sfx * 3, "auditor")
        with any_console.api(f"aud-{sfx}", "pw-" + sfx * 3) as ro:
            assert ro.get(f"/profiles/{prof['id']}").status_code == 200
            assert ro.post(f"/profiles/{prof['id']}/accept").status_code == 403
        # enforce before accept is refused; a stale proposal is refused
        assert api.post(f"/profiles/{prof['id']}/enforce").status_code == 409
        stale = api.post(
            f"/profiles/{prof['id']}/accept", json={"policy_revision": prop["policy_revision"] - 1}
        )
        assert stale.status_code == 409, stale.text
        r = api.post(f"/profiles/{prof['id']}/accept", json={"policy_revision": prop["policy_revision"]})
        assert r.status_code == 200, r.text
        assert r.json()["profile"]["state"] == "accepted"
        policy = r.json()["policy"]
        assert policy["rules"][0]["name"] == f"learned: o1/s1/{front}"
        assert policy["rules"][0]["network"]["effect"] == "alert"

    # after accept: a new destination shows up new and denied (alert), then prevent once enforced
    late = _report("run-b", destinations=[{**_seen(ip="10.7.7.7", port=22), "first_seen": time.time() + 1,
                                           "last_seen": time.time() + 2}])  # fmt: skip
    asyncio.run(_send(any_console, token, front, 0, [late]))
    with any_console.api() as api:
        graph = api.get("/discovery/map", params={"app": front, "flagged": True}).json()
        (edge,) = graph["edges"]
        assert edge["target"] == "ip:10.7.7.7"
        assert edge["new_since_accept"] and edge["denied_by_current_policy"]
        assert edge["denied_effect"] == "alert"
        r = api.post(f"/profiles/{prof['id']}/enforce")
        assert r.status_code == 200, r.text
        assert r.json()["policy"]["rules"][0]["network"]["effect"] == "prevent"
        edge = api.get("/discovery/map", params={"app": front, "flagged": True}).json()["edges"][0]
        assert edge["denied_effect"] == "prevent"
        # allow that edge from the map; deny a DNS destination node
        r = api.post("/discovery/rules", json={"action": "allow", "edges": [edge["id"]]})
        assert r.status_code == 200, r.text
        assert r.json()["changes"][0]["outbound"] == ["10.7.7.7:22/tcp"]
        r = api.post(
            "/discovery/rules", json={"action": "deny", "nodes": ["dns:api.example.org"], "edges": []}
        )
        assert r.status_code == 200, r.text
        rule = api.get("/policies/runtime/app-embedded").json()["rules"][0]
        assert "api.example.org" in rule["dns"]["deny"] and "api.example.org" not in rule["dns"]["allow"]
        flagged = api.get("/discovery/map", params={"app": front, "flagged": True}).json()["edges"]
        denied = {e["target"]: e["denied_by_current_policy"] for e in flagged}
        assert denied == {"ip:10.7.7.7": False, "dns:api.example.org": True}  # still new since accept
        assert (
            api.post("/discovery/rules", json={"action": "allow", "edges": ["app:x->ip:1"]}).status_code
            == 404
        )
        actions = [a["action"] for a in api.get("/audits/mgmt", params={"limit": 50}).json()
                   if front in a["target"]]  # fmt: skip
        assert {"learning.accept", "learning.enforce", "discovery.allow", "discovery.deny"} <= set(actions)
        accepted = next(a for a in api.get("/audits/mgmt", params={"limit": 50}).json() if a["action"] == "learning.accept"
                        and front in a["target"])  # fmt: skip
        assert accepted["username"] == "admin" and accepted["detail"]["diff"]


def test_start_learning_puts_a_learn_rule_first(any_console):
    app = f"newapp-{uuid.uuid4().hex[:6]}"
    with any_console.api() as api:
        api.put("/policies/runtime/app-embedded", json={"rules": [{"name": f"base-{app}", "network": {
            "effect": "prevent", "outbound": {"deny": ["10.66.0.0/16"]}}}]}).raise_for_status()  # fmt: skip
        r = api.post(
            "/profiles", json={"org": "o2", "space": "s2", "app": app, "window_hours": 2, "stable_hours": 1}
        )
        assert r.status_code == 201, r.text
        rule = r.json()["policy"]["rules"][0]
        assert rule["name"] == f"learned: o2/s2/{app}"
        assert (rule["processes"]["effect"], rule["network"]["effect"], rule["dns"]["effect"]) == (
            "learn",
        ) * 3
        assert rule["network"]["outbound"]["deny"][0]["cidr"] == "10.66.0.0/16"  # kept from the rule it had
        assert r.json()["profile"]["state"] == "learning" and r.json()["profile"]["window_hours"] == 2
        bad = api.post("/profiles", json={"org": "o2", "space": "s2", "app": app, "window_hours": -1})
        assert bad.status_code == 422
        assert api.get("/profiles/999999").status_code == 404
        assert api.get("/profiles/999999/proposal").status_code == 404


def test_an_app_seen_doing_nothing_on_the_network_is_proposed_nothing(console):
    """A worker that neither connected, resolved nor listened while learning: the proposal must not
    leave the allow-lists empty (the model's "any") but admit nothing, and still allow ephemeral binds."""
    app = f"worker-{uuid.uuid4().hex[:6]}"
    token = bundle_fields(console.install_bundle())["enrolment_token"]
    only_runs = _report("w", processes=[_seen(exe="/usr/bin/python3", argv_shape=["worker.py"], parent="/bin/sh")])
    asyncio.run(_send(console, token, app, 0, [only_runs]))
    with console.api() as api:
        prof = _by_app(api.get("/profiles", params={"org": "o1", "space": "s1"}).json(), app)
        rule = Rule.model_validate(api.get(f"/profiles/{prof['id']}/proposal").json()["rule"])
    assert rule.network.outbound.allow and rule.network.listening.allow
    for ip, port, proto in [("10.0.0.1", 443, "tcp"), ("127.0.0.1", 5432, "tcp"), ("::1", 80, "tcp"),
                            ("10.0.0.53", 53, "udp"), ("0.0.0.0", 8080, "tcp")]:  # fmt: skip
        assert decide_connect(rule, ip, port, proto).violation, (ip, port, proto)
    assert decide_bind(rule, 8080).violation and not decide_bind(rule, 0).violation


def test_hostile_reports_are_refused_or_sanitised(any_console):
    app = f"hostile-{uuid.uuid4().hex[:6]}"
    token = bundle_fields(any_console.install_bundle())["enrolment_token"]
    bad = _report(
        "r1",
        destinations=[
            _seen(ip="not-an-ip", port=1),
            _seen(ip="10.0.0.9", port=80, names=["bad name!", "ok.example"]),
        ],
        dns=[_seen(name="bad name!"), _seen(name="*.wild")],
        processes=[_seen(exe="/bin/sh", argv_shape=["-c", "x" * 200])],
    )
    huge = (
        '{"v":1,"type":"profile","run_id":"r2","dns":['
        + ",".join(f'{{"name":"{"a" * 240}{i}","first_seen":1,"last_seen":1}}' for i in range(12000))
        + "]}"
    )

    async def send() -> str:
        ident = await enrol(any_console.ws_address, any_console.ca_pem, token, requested_id=app)
        conn, _ = await open_defender(
            any_console.ws_address, any_console.ca_pem, ident, app_name=app, org="o3", space="s3"
        )
        try:
            await conn.send(huge)  # 3 MB: over the profile message limit
            err = await next_of(conn, p.Error)
            await conn.send(p.dump(bad))
            await conn.send(p.dump(p.Events(seq=1, events=[])))
            await next_of(conn, p.Ack)  # the connection is still served
            return err.message
        finally:
            await conn.close()

    message = asyncio.run(send())
    assert "limit for this message type" in message
    with any_console.api() as api:
        (row,) = api.get("/profiles", params={"app": app}).json()
        detail = api.get(f"/profiles/{row['id']}").json()
        assert [(d["ip"], d["names"]) for d in detail["destinations"]] == [("10.0.0.9", ["ok.example"])]
        assert detail["dns"] == []
        assert detail["processes"][0]["argv_shape"] == ["-c", "x" * 200]
        prop = api.get(f"/profiles/{row['id']}/proposal")
        assert prop.status_code == 200 and prop.json()["rule"]["dns"]["allow"] == ["ok.example"]


def test_a_flooding_defender_is_rate_limited_per_defender(console_factory):
    """Learning reports are budgeted per defender (GARRISON_PROFILE_LIMITS: reports and MiB per minute):
    over it, each report is refused with a `rate_limited` error that says why, the connection is
    still served, other defenders are not affected, and /metrics counts the refusals by reason. A
    report whose type is not at its head (not sniffed before parsing) is budgeted all the same."""
    console = console_factory(env={"GARRISON_PROFILE_LIMITS": "5,1"}, args=["--public-metrics"])
    token = bundle_fields(console.install_bundle())["enrolment_token"]
    small = p.dump(_report("r1", dns=[_seen(name="a.example")]))
    tail_typed = small.replace('"type":"profile",', "")[:-1] + ',"type":"profile"}'
    big = p.dump(_report("r2", dns=[_seen(name=f"{'b' * 200}{i}.example") for i in range(1000)]))  # ~0.3 MB

    async def flood(app: str, messages: list[str]) -> list[p.Error]:
        ident = await enrol(console.ws_address, console.ca_pem, token, requested_id=app)
        conn, _ = await open_defender(console.ws_address, console.ca_pem, ident, app_name=app, org="o9", space="s9")
        errors: list[p.Error] = []
        try:
            for m in messages:
                await conn.send(m)
            await conn.send(p.dump(p.Events(seq=1, events=[])))
            while True:  # errors come in order, before the ack of the batch sent last
                msg = p.parse(await conn.recv())
                if isinstance(msg, p.Ack):
                    return errors
                if isinstance(msg, p.Error):
                    errors.append(msg)
        finally:
            await conn.close()

    flooded = asyncio.run(flood("flood", [small] * 25 + [tail_typed] * 5))
    assert len(flooded) >= 20 and {e.code for e in flooded} == {"rate_limited"}
    assert "5 reports and 1 MiB per 60 s" in flooded[0].message
    heavy = asyncio.run(flood("heavy", [big] * 5))  # within 5 reports, over 1 MiB
    assert heavy and {e.code for e in heavy} == {"rate_limited"} and "(bytes)" in heavy[0].message
    calm = asyncio.run(flood("calm", [small]))  # another defender's budget is its own
    assert calm == []
    with console.api() as api:
        assert {r["app"] for r in api.get("/profiles", params={"org": "o9"}).json()} == {"flood", "heavy", "calm"}
    metrics = httpx.get(console.url + "/metrics", verify=console.ssl_context()).text
    counted = {
        line.split('reason="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("garrison_profile_reports_refused_total{")
    }
    assert counted["rate"] >= 20 and counted["bytes"] >= 1


def test_auto_accept_when_the_window_ends_or_the_profile_is_stable(console_factory):
    """An operator lets the console accept a profile by itself: into alert mode (never prevent), as
    `system` in the management audit, once (window: the learning window passed; stable: nothing new
    for stable_hours), never for a profile that saw nothing; the option is audited and set through the
    API, refused once the profile no longer learns."""
    console = console_factory(env={"GARRISON_LEARNING_TICK_S": "0.3"})
    token = bundle_fields(console.install_bundle())["enrolment_token"]
    tiny = 1 / 3600  # one second, in hours
    with console.api() as api:
        for app, body in (("win", {"window_hours": tiny, "stable_hours": 1000, "auto_accept": "window"}),
                          ("calm", {"window_hours": 1000, "stable_hours": 1000}),
                          ("quiet", {"window_hours": tiny, "stable_hours": tiny, "auto_accept": "window"}),
                          ("manual", {"window_hours": tiny, "stable_hours": tiny})):
            r = api.post("/profiles", json={"org": "o1", "space": "s1", "app": app, **body})
            assert r.status_code == 201, r.text
        calm = _by_app(api.get("/profiles", params={"org": "o1"}).json(), "calm")
        r = api.put(f"/profiles/{calm['id']}/auto-accept", json={"auto_accept": "stable"})
        assert r.status_code == 200 and r.json()["auto_accept"] == "stable"
        assert api.put(f"/profiles/{calm['id']}/auto-accept", json={"auto_accept": "now"}).status_code == 422

    async def learn() -> None:
        for app in ("win", "calm", "manual"):
            await _send(console, token, app, 0, [_report("r", dns=[_seen(name=f"{app}.example")],
                                                         processes=[_seen(exe="/bin/app")])])

    asyncio.run(learn())

    def states() -> dict[str, dict[str, Any]]:
        with console.api() as api:
            return {r["app"]: r for r in api.get("/profiles", params={"org": "o1"}).json()}

    deadline = time.monotonic() + 60
    while states()["win"]["state"] != "accepted":
        assert time.monotonic() < deadline, states()["win"]
        time.sleep(0.2)
    win = states()["win"]
    assert win["accepted_by"] == "system" and win["auto_accept"] == "off"  # done once
    with console.api() as api:
        rule = next(r for r in console.policy()["rules"] if r["name"] == "learned: o1/s1/win")
        assert {rule["processes"]["effect"], rule["network"]["effect"], rule["dns"]["effect"]} == {"alert"}
        assert rule["dns"]["allow"] == ["win.example"]
        mgmt = api.get("/audits/mgmt", params={"limit": 100}).json()
        auto = [a for a in mgmt if a["action"] == "learning.accept" and a["target"] == "o1/s1/win"]
        assert len(auto) == 1 and auto[0]["username"] == "system" and auto[0]["detail"]["auto_accept"] == "window"
        assert any(a["action"] == "learning.auto_accept" and a["target"] == "o1/s1/calm"
                   and a["detail"]["auto_accept"] == "stable" and a["username"] == console.admin_user for a in mgmt)
        # the stable one is not stable for 1,000 h; nothing seen is never accepted; off stays manual
        now = states()
        assert (now["calm"]["state"], now["quiet"]["state"], now["manual"]["state"]) == ("learning",) * 3
        assert now["quiet"]["auto_accept"] == "window"
        assert api.put(f"/profiles/{win['id']}/auto-accept", json={"auto_accept": "window"}).status_code == 409
        # stable: the calm one's stable period shortened by learning again with it
        r = api.post("/profiles", json={"org": "o1", "space": "s1", "app": "calm", "window_hours": 1000,
                                        "stable_hours": tiny, "auto_accept": "stable"})
        assert r.status_code == 201
    asyncio.run(_send(console, token, "calm", 0, [_report("r2", dns=[_seen(name="calm.example")])]))
    deadline = time.monotonic() + 60
    while states()["calm"]["state"] != "accepted":
        assert time.monotonic() < deadline, states()["calm"]
        time.sleep(0.2)
    assert states()["calm"]["accepted_by"] == "system"


def test_map_stream_pushes_a_change_when_a_profile_gets_a_report(console):
    """`GET /discovery/stream` (Server-Sent Events): `hello`, then `map` once a report changed a
    profile; without credentials it is refused."""
    token = bundle_fields(console.install_bundle())["enrolment_token"]
    app = f"pushed-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=console.url + "/api/v1", verify=console.ssl_context(), timeout=30) as anon:
        assert anon.get("/discovery/stream").status_code == 401
    with console.api() as api, api.stream("GET", "/discovery/stream") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert "event: hello" in [next(lines) for _ in range(2)]
        asyncio.run(_send(console, token, app, 0, [_report("r", dns=[_seen(name="pushed.example")])]))
        deadline = time.monotonic() + 90  # (keep-alives every 15 s: the loop never waits for ever)
        for line in lines:
            if line == "event: map" or time.monotonic() > deadline:
                break
        assert line == "event: map"
