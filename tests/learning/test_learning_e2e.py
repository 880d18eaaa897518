"""Learning end to end: real app-embedded defenders in learn mode, a real console, loopback services
and a DNS server of the suite's own.

`frontend` (the demo sample app) calls two other sample apps — `billing` by its instance address,
`inventory` by its `apps.internal` route — and an external name; the console builds the profiles,
names each destination by its service identity on the map, proposes a rule; the rule is accepted
(alert: a new destination is audited and makes an incident) and enforced (prevent: a new
destination, a new name and a new executable are refused while the learned ones keep working).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.defender.net.conftest import HOST4, OTHER4, DnsServer, in_netns
from tests.defender.net.servers import TcpServer, free_port
from tests.fixtures.console import RunningConsole
from tests.polling import until

pytestmark = pytest.mark.slow
ORG, SPACE = "acme", "prod"
EXTERNAL_IP = OTHER4  # the external host (non-loopback: the guard treats every loopback form as one)
STRANGER_IP = HOST4  # never called while learning


def _skip_reason() -> str | None:
    from garrison.kernel.features import probe

    f = probe()
    if f.arch != "x86_64" or not f.seccomp_user_notif:
        return "needs seccomp user notification on x86_64"
    return None


def _wait(what: str, fn: Callable[[], Any], timeout: float = 90.0) -> Any:
    return until(fn, timeout, what, interval=0.3)


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}


class App:
    """A sample app under `garrison defender app-embedded`, enrolled with the console."""

    def __init__(
        self, name: str, workdir: Path, console: Any, dns: tuple[str, int], routes: list[str]
    ) -> None:
        self.name = name
        self.port = free_port("127.0.0.1")
        data = workdir / name
        data.mkdir()
        vcap = {"application_name": name, "space_name": SPACE, "organization_name": ORG,
                "application_id": str(uuid.uuid4()), "instance_index": 0, "application_uris": routes}  # fmt: skip
        env = {
            **os.environ, "DATA_FOLDER": str(data), "INSTALL_BUNDLE": console.install_bundle(),
            "VCAP_APPLICATION": json.dumps(vcap), "CF_INSTANCE_INTERNAL_IP": "127.0.0.1", "PORT": str(self.port),
            "DEFENDER_DNS_UPSTREAMS": f"{dns[0]}:{dns[1]}", "DEFENDER_PROFILE_INTERVAL": "0.5",
        }  # fmt: skip
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "garrison", "defender", "app-embedded", sys.executable, "-m",
                 "garrison.demo.sample_app"],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        _wait(
            f"{name} to serve", lambda: self.proc.poll() is not None or _get(self.url("/healthz"))[0] == 200
        )
        assert self.proc.poll() is None, self.log.read_text()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def connect(self, host: str, port: int) -> int:
        return _get(self.url(f"/connect?host={host}&port={port}"))[0]

    def run(self, cmd: str) -> tuple[int, dict[str, Any]]:
        return _get(self.url(f"/run?cmd={cmd}"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def test_learn_map_accept_enforce(netns: str, tmp_path: Path) -> None:
    """Everything (console, defenders, services, DNS, API client) runs in the suite's network
    namespace, where the external host and the stranger have non-loopback addresses."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    tmp_path.chmod(0o755)
    in_netns(netns, lambda: _scenario(tmp_path))


def _scenario(tmp_path: Path) -> None:
    console = RunningConsole(tmp_path / "console").start()
    sfx = uuid.uuid4().hex[:6]
    names = {k: f"{k}-{sfx}" for k in ("frontend", "billing", "inventory")}
    internal = f"{names['inventory']}.apps.internal"
    external = TcpServer(EXTERNAL_IP)
    stranger_srv = TcpServer(STRANGER_IP)
    dns = DnsServer(
        {internal: ["127.0.0.1"], "api.partner.test": [EXTERNAL_IP], "new.partner.test": [EXTERNAL_IP]}
    )
    apps: dict[str, App] = {}
    try:
        with console.api() as api:
            for n in names.values():  # learn mode for the three apps, before their defenders start
                api.post("/profiles", json={"org": ORG, "space": SPACE, "app": n}).raise_for_status()
        apps["billing"] = App(
            names["billing"], tmp_path, console, dns.address, [f"{names['billing']}.apps.internal"]
        )
        apps["inventory"] = App(names["inventory"], tmp_path, console, dns.address, [internal])
        apps["frontend"] = App(
            names["frontend"], tmp_path, console, dns.address, [f"{names['frontend']}.example.com"]
        )
        _learn_accept_enforce(console, apps, names, internal, external.port, stranger_srv.port)
    finally:
        for a in apps.values():
            a.stop()
        dns.close()
        external.close()
        stranger_srv.close()
        console.stop()


def _learn_accept_enforce(
    console: Any, apps: dict[str, App], names: dict[str, str], internal: str, ext_port: int, stranger: int
) -> None:
    front, billing, inventory = apps["frontend"], apps["billing"], apps["inventory"]
    # what the frontend does while learning
    assert front.connect("127.0.0.1", billing.port) == 200, front.log.read_text()
    assert front.connect(internal, inventory.port) == 200, front.log.read_text()
    assert front.connect("api.partner.test", ext_port) == 200, front.log.read_text()
    status, out = front.run("date")
    assert status == 200 and out["exit"] == 0, out

    api = console.api()

    def frontend_profile() -> dict[str, Any] | None:
        rows = api.get("/profiles", params={"app": names["frontend"]}).json()
        if not rows:
            return None
        detail = api.get(f"/profiles/{rows[0]['id']}").json()
        ports = {d["port"] for d in detail["destinations"]}
        exes = {p["exe"] for p in detail["processes"]}
        done = {billing.port, inventory.port, ext_port} <= ports and any(e.endswith("/date") for e in exes)
        return detail if done else None

    prof = _wait("the frontend's profile", frontend_profile)
    assert prof["state"] == "learning" and prof["instances"] == 1
    assert {d["name"] for d in prof["dns"]} >= {internal, "api.partner.test"}
    assert any(lp["port"] == front.port for lp in prof["listening"])
    by_port = {d["port"]: d for d in prof["destinations"]}
    assert by_port[billing.port]["service"]["kind"] == "app"
    assert by_port[billing.port]["service"]["app"] == names["billing"]  # by instance address + port
    assert by_port[inventory.port]["service"]["app"] == names["inventory"]  # by its apps.internal route
    assert by_port[inventory.port]["names"] == [internal]
    assert by_port[ext_port]["service"] == {
        "kind": "dns", "name": "api.partner.test", "label": "api.partner.test", "id": "dns:api.partner.test"
    }  # fmt: skip
    assert by_port[billing.port]["protocol"] == "tcp"

    # the map: frontend's edges to the two apps and the external name
    graph = api.get("/discovery/map", params={"org": ORG, "app": names["frontend"]}).json()
    src = f"app:{ORG}/{SPACE}/{names['frontend']}"
    targets = {e["target"] for e in graph["edges"] if e["source"] == src}
    assert {f"app:{ORG}/{SPACE}/{names['billing']}", f"app:{ORG}/{SPACE}/{names['inventory']}",
            "dns:api.partner.test"} <= targets  # fmt: skip

    # review → accept (alert): a new destination is audited, not blocked, and makes an incident
    proposal = api.get(f"/profiles/{prof['id']}/proposal").json()
    assert any(a.endswith("/date") for a in proposal["rule"]["processes"]["allow"])
    assert {internal, "api.partner.test"} <= set(proposal["rule"]["dns"]["allow"])
    r = api.post(f"/profiles/{prof['id']}/accept", json={"policy_revision": proposal["policy_revision"]})
    assert r.status_code == 200, r.text

    def alerted() -> list[dict[str, Any]]:
        assert front.connect(STRANGER_IP, stranger) == 200  # alert mode lets it through
        return [a for a in api.get("/audits/runtime/app-embedded", params={"app": names["frontend"]}).json()
                if a.get("control") == "network.outbound.allow" and a.get("dest_port") == stranger]  # fmt: skip

    (audit, *_) = _wait("the anomaly audit", alerted)
    assert audit["effect"] == "alert"
    # the anomaly shows on the map: new since accept, denied by the current policy (alert)
    flagged = api.get("/discovery/map", params={"app": names["frontend"], "flagged": True}).json()["edges"]
    edge = next(e for e in flagged if e["target"] == f"ip:{STRANGER_IP}")
    assert edge["new_since_accept"] and edge["denied_by_current_policy"] and edge["denied_effect"] == "alert"
    incidents = api.get("/incidents", params={"app": names["frontend"]}).json()
    assert any(i.get("type") == "network" for i in incidents), incidents

    # enforce (prevent): new destination, new name, new executable refused; learned ones still work
    r = api.post(f"/profiles/{prof['id']}/enforce")
    assert r.status_code == 200, r.text
    _wait("the new destination to be blocked", lambda: front.connect(STRANGER_IP, stranger) == 403)
    assert front.connect("127.0.0.1", billing.port) == 200
    assert front.connect(internal, inventory.port) == 200
    assert front.connect("api.partner.test", ext_port) == 200
    assert front.connect("new.partner.test", ext_port) == 403
    status, out = front.run("id")
    assert status == 403 or out.get("exit") != 0, out
    assert front.run("date")[1].get("exit") == 0
    prevented = api.get(
        "/audits/runtime/app-embedded", params={"app": names["frontend"], "effect": "prevent"}
    ).json()
    assert {a["control"] for a in prevented} >= {"network.outbound.allow", "dns.allow"}, prevented

    actions = {(a["action"], a["username"]) for a in api.get("/audits/mgmt", params={"limit": 100}).json()
               if names["frontend"] in a["target"]}  # fmt: skip
    assert {
        ("learning.start", "admin"),
        ("learning.accept", "admin"),
        ("learning.enforce", "admin"),
    } <= actions
    api.close()
