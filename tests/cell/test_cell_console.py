"""The cell defender with a real console: enrolled as a `cell` defender from the console's cell
bundle, each runc container one workload (its CF identity, the rule that applies), audits naming the
container's app, policy pushes re-applied to running containers, stopped containers reported."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tests.cell.conftest import START_SH, CellProcess
from tests.cell.conftest import until as _until

REPO = Path(__file__).resolve().parents[2]


def _policy(rule: str, deny: list[str]) -> dict[str, Any]:
    return {"rules": [
        {"name": "billing-only", "scope": {"apps": ["billing"]}, "processes": {"effect": "disable"}},
        {"name": rule, "scope": {"orgs": ["acme"]},
         "processes": {"effect": "prevent", "deny": deny, "drift_prevention": True}},
    ]}  # fmt: skip


def workloads(console: Any, did: str, **params: str) -> list[dict[str, Any]]:
    with console.api() as api:
        r = api.get(f"/defenders/{did}/workloads", params=params)
        r.raise_for_status()
        return list(r.json())


def app_started(garden: Any, **kw: Any) -> Any:
    c = garden(**kw)
    c.stream_in("/home/vcap/app/bin/true", Path("/bin/busybox").read_bytes())  # the droplet
    time.sleep(0.1)
    c.run_app(START_SH)
    return c


def test_containers_are_workloads_audits_name_them_policy_pushes_apply(
    console: Any, garden: Any, cell: CellProcess
) -> None:
    console.put_policy(_policy("cell-rule", ["wget", "nc"]))
    cell.start("--forensics-dir", str(cell.data.parent / "forensics"))
    did = cell.defender_id
    with console.api() as api:
        me = _until(lambda: (d := api.get(f"/defenders/{did}").json())["connected"] and d, what="connected")
        assert me["defender_type"] == "cell" and me["hostname"] == os.uname().nodename[:200]
    shop = app_started(garden)
    billing = app_started(garden, app="billing", index=3)

    def by_container() -> dict[str, dict[str, Any]]:
        return {w["container_id"]: w for w in workloads(console, did, running="true")}

    rows = _until(lambda: (r := by_container()) and r.get(shop.id, {}).get("app_name") == "shop"
                  and r.get(billing.id, {}).get("app_name") == "billing" and r, what="workloads")  # fmt: skip
    assert (rows[shop.id]["org"], rows[shop.id]["space"], rows[shop.id]["app_guid"]) == ("acme", "prod", "shop-guid")
    assert rows[shop.id]["rule"] == "cell-rule" and "exec" in rows[shop.id]["protections"]
    assert rows[billing.id]["rule"] == "billing-only" and rows[billing.id]["instance"] == 3
    # the console's rule is enforced in the container, and the audit names the container's workload
    denied = shop.exec("/bin/wget", "--help")
    assert "not permitted" in denied.stderr.lower()
    assert "not permitted" not in billing.exec("/bin/wget", "--help").stderr.lower()  # its rule: disabled

    def audit() -> dict[str, Any] | None:
        with console.api() as api:
            evs = api.get("/audits/runtime/app-embedded", params={"app": "shop", "type": "process"}).json()
        return next((e for e in evs if e["defender_id"] == did and e["extra"].get("container") == shop.id), None)

    ev = _until(audit, what="audit in the console")
    assert (ev["app_name"], ev["org"], ev["space"], ev["rule"], ev["effect"]) == ("shop", "acme", "prod", "cell-rule",
                                                                                  "prevent")
    assert ev["exe"] == "/bin/wget" and ev["extra"]["cell"]
    # the incident page's process tree: the cell's forensic trail of that container, the audit's pid
    with console.api() as api:
        r = api.get(f"/defenders/{did}/forensics/tree", params={"pid": ev["pid"], "container": shop.id})
        assert r.status_code == 200, r.text
        node = r.json()["tree"][0]
        while node["pid"] != ev["pid"]:
            node = node["children"][0]
        assert {"exe": "/bin/wget", "verdict": "refused"}.items() <= node["execs"][-1].items(), node
        r = api.get(f"/defenders/{did}/forensics/tree")  # a cell holds many containers
        assert r.status_code == 409 and "container" in r.text
    # a policy push re-applies to running containers: wget allowed, the new rule name reported
    console.put_policy(_policy("cell-rule-v2", ["nc"]))
    _until(lambda: "not permitted" not in shop.exec("/bin/wget", "--help").stderr.lower(), what="push applied")
    _until(lambda: by_container()[shop.id]["rule"] == "cell-rule-v2", what="rule reported")
    assert "not permitted" in shop.exec("/bin/sh", "-c", "exec /bin/nc -h").stderr.lower()
    # a stopped container is reported gone
    billing.delete()
    _until(lambda: billing.id not in by_container(), what="container gone")
    gone = {w["container_id"]: w for w in workloads(console, did, running="false")}
    assert gone[billing.id]["gone_at"] and gone[billing.id]["app_name"] == "billing"
