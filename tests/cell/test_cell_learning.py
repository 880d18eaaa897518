"""Learning on a cell: a runc container whose app is put in learn mode through the console's API, the
cell defender (the CLI, enrolled from the console's cell bundle) recording what the container does —
executables with argv shapes and parents from the exec gate, outbound flows from NFLOG, DNS names
from its resolver, listening ports from sock_diag — and reporting it as the container's workload
profile; the proposal accepted (alert: a new destination and a new executable are anomaly audits),
then enforced (prevent: both refused while the learned ones keep working)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from garrison.channel import protocol as p
from tests.cell.conftest import CellProcess
from tests.cell.conftest import until as _until
from tests.cell.test_cell_console import workloads
from tests.cell.test_cell_dns import _connect, _started_wired
from tests.defender.net.conftest import DnsServer
from tests.defender.net.servers import TcpServer

APP_SCRIPT = "/bin/nc -l -p 8080 & while true; do sleep 1; done"
NAME_ONLY_IP = "192.0.2.7"  # what the learned name resolves to (TEST-NET: never connected)


@pytest.fixture
def upstream() -> Iterator[DnsServer]:
    server = DnsServer({"good.test": [NAME_ONLY_IP]})
    yield server
    server.close()


def _profile(console: Any) -> dict[str, Any] | None:
    with console.api() as api:
        rows = api.get("/profiles", params={"org": "acme", "space": "prod", "app": "shop"}).json()
        return api.get(f"/profiles/{rows[0]['id']}").json() if rows else None


def _audits(console: Any, control: str) -> list[dict[str, Any]]:
    with console.api() as api:
        evs = api.get("/audits/runtime/app-embedded", params={"app": "shop"}).json()
    return [e for e in evs if e["control"] == control]


def test_cell_container_learns_then_alerts_then_enforces(
    console: Any, garden: Any, cell: CellProcess, upstream: DnsServer
) -> None:
    with console.api() as api:
        r = api.post("/profiles", json={"org": "acme", "space": "prod", "app": "shop", "window_hours": 1,
                                        "stable_hours": 1})
        assert r.status_code == 201, r.text
        assert r.json()["policy"]["rules"][0]["processes"]["effect"] == "learn"
    host, port = upstream.address
    cell.start("--profile-interval", "0.3", "--dns-upstream", f"{host}:{port}")
    c, host_ip = _started_wired(garden, APP_SCRIPT)
    _until(lambda: any(w["container_id"] == c.id and "dns" in w["protections"]
                       for w in workloads(console, cell.defender_id, running="true")), 30, "learning applied")
    learned, other = TcpServer(host_ip), TcpServer(host_ip)
    try:
        # what the app does while it learns: a name, a destination reached by address, a listener
        lookup = c.exec("/bin/sh", "-c", f"/bin/nslookup good.test {host_ip} 2>&1; echo rc=$?").stdout
        assert NAME_ONLY_IP in lookup, lookup
        assert _connect(c, host_ip, learned.port)

        def seen() -> dict[str, Any] | None:
            prof = _profile(console)
            if prof is None:
                return None
            dests = {(d["ip"], d["port"], d["protocol"]) for d in prof["destinations"]}
            exes = {x["exe"] for x in prof["processes"]}
            ok = ((host_ip, learned.port, "tcp") in dests and {"/bin/sh", "/bin/nc", "/bin/nslookup"} <= exes
                  and "good.test" in {n["name"] for n in prof["dns"]}
                  and (8080, "tcp") in {(x["port"], x["protocol"]) for x in prof["listening"]})
            return prof if ok else None

        prof = _until(seen, 60, "the container's profile in the console")
        assert prof["instances"] == 1 and prof["state"] == "learning"
        nc = next(x for x in prof["processes"] if x["exe"] == "/bin/nc" and "-w" in x["argv_shape"])
        assert nc["argv_shape"] == ["-w", "<n>", host_ip, "<n>"] and nc["parent"] == "/bin/sh"
        assert all(d["port"] != 53 for d in prof["destinations"])  # queries to the resolver are not flows
        assert not [x for x in prof["processes"] if x["exe"] == "/bin/cat"]

        with console.api() as api:
            prop = api.get(f"/profiles/{prof['id']}/proposal").json()
            rule = prop["rule"]
            assert rule["dns"]["allow"] == ["good.test"] and rule["network"]["listening"]["allow"] == [
                {"start": 8080, "end": 8080}]
            assert {"cidr": f"{host_ip}/32", "protocol": "tcp", "ports": [
                {"start": learned.port, "end": learned.port}]} in rule["network"]["outbound"]["allow"]
            r = api.post(f"/profiles/{prof['id']}/accept", json={"policy_revision": prop["policy_revision"]})
            assert r.status_code == 200, r.text
        # alert: outside the profile is audited, nothing refused
        _until(lambda: _connect(c, host_ip, other.port) and _audits(console, "network.outbound.allow"), 30,
               "a new destination audited")
        ev = _audits(console, "network.outbound.allow")[0]
        assert (ev["effect"], ev["dest_port"], ev["extra"]["container"]) == ("alert", other.port, c.id)
        assert "not permitted" not in c.exec("/bin/cat", "/etc/passwd").stderr.lower()
        ev = _until(lambda: _audits(console, "processes.allow"), 30, "a new executable audited")[0]
        assert ev["exe"] == "/bin/cat" and ev["effect"] == "alert"
        flagged = _until(lambda: (pr := _profile(console)) and any(
            d["port"] == other.port and d["new_since_accept"] for d in pr["destinations"]) and pr, 30, "anomaly")
        assert flagged["state"] == "accepted"

        with console.api() as api:
            assert api.post(f"/profiles/{prof['id']}/enforce").status_code == 200
        # prevent: the new executable and destination refused, what was learnt keeps working
        _until(lambda: "not permitted" in c.exec("/bin/cat", "/etc/passwd").stderr.lower(), 30, "exec refused")
        assert not _connect(c, host_ip, other.port)
        assert _connect(c, host_ip, learned.port)
        assert NAME_ONLY_IP in c.exec("/bin/nslookup", "good.test", host_ip).stdout
        assert "NXDOMAIN" in c.exec("/bin/sh", "-c", f"/bin/nslookup new.test {host_ip} 2>&1").stdout
        _until(lambda: [e for e in _audits(console, "network.outbound.allow") if e["effect"] == "prevent"], 30,
               "a refused destination audited")
    finally:
        learned.close()
        other.close()


def test_a_cell_cannot_file_a_profile_for_a_workload_it_never_reported(console: Any, cell: CellProcess) -> None:
    """The console files a cell's report under the identity the cell reported for that container; a
    report naming another container, or claiming another app for one, is refused on the channel."""
    import asyncio

    from garrison.channel.credentials import load_credentials
    from tests.console.defender_client import next_of, open_defender

    cell.start()
    creds = load_credentials(cell.data)
    assert creds is not None
    cell.stop()  # its connection would replace ours (same defender id)
    wl = p.ProfileWorkload(app_name="billing", org="acme", space="prod", container_id="not-on-this-cell")
    report = p.ProfileReport(run_id="r1", controls=["dns"], workload=wl,
                             dns=[p.SeenName(name="x.test", first_seen=1.0, last_seen=1.0)])

    async def send() -> list[str]:
        conn, _ = await open_defender(console.ws_address, console.ca_pem, creds, kernel={"defender_type": "cell"})
        try:
            await conn.send(p.dump(report))
            first = await next_of(conn, p.Error)
            await conn.send(p.dump(report.model_copy(update={"workload": None})))
            second = await next_of(conn, p.Error)
            return [first.code + ": " + first.message, second.code + ": " + second.message]
        finally:
            await conn.close()

    errors = asyncio.run(send())
    assert errors[0].startswith("profile_refused") and "never reported by this cell" in errors[0]
    assert errors[1].startswith("profile_refused") and "must name its workload" in errors[1]
    with console.api() as api:
        assert api.get("/profiles", params={"app": "billing"}).json() == []
