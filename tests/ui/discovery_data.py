"""Profile data for the discovery map pages and bench, sent the way defenders send it: `profile`
reports over the real WSS channel of a running console, one enrolled defender per app instance."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass, field
from typing import Any

from garrison.channel import protocol as p
from tests.console.defender_client import bundle_fields, enrol, next_of, open_defender


def seen(t0: float, **kw: Any) -> dict[str, Any]:
    return {"count": 3, "first_seen": t0, "last_seen": t0 + 5, **kw}


@dataclass
class AppReport:
    """What one app instance reports: its identity and a profile report's fields."""

    org: str
    space: str
    app: str
    instance: int = 0
    fields: dict[str, Any] = field(default_factory=dict)

    def report(self, run_id: str) -> p.ProfileReport:
        return p.ProfileReport(
            run_id=run_id, controls=["processes", "network", "listening", "dns"], **self.fields
        )


async def _send_one(console: Any, token: str, app: AppReport, run_id: str, sem: asyncio.Semaphore) -> None:
    async with sem:
        ident = await enrol(console.ws_address, console.ca_pem, token)
        conn, _ = await open_defender(
            console.ws_address, console.ca_pem, ident, app_name=app.app, org=app.org, space=app.space,
            instance=app.instance,
        )  # fmt: skip
        try:
            await conn.send(p.dump(app.report(run_id)))
            # the console reads a connection's messages in order: once this is acked, the report is stored
            await conn.send(p.dump(p.Events(seq=1, events=[])))
            await next_of(conn, p.Ack)
        finally:
            await conn.close()


def send_reports(console: Any, apps: list[AppReport], run_id: str = "run-1", parallel: int = 8) -> float:
    """Send every app's report through its own defender connection; returns the seconds it took."""
    token = bundle_fields(console.install_bundle())["enrolment_token"]
    t = time.monotonic()

    async def all_() -> None:
        sem = asyncio.Semaphore(parallel)
        await asyncio.gather(*(_send_one(console, token, a, run_id, sem) for a in apps))

    # in a thread of its own: Playwright's sync API keeps an event loop running in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, all_()).result()
    return time.monotonic() - t


def estate(n_apps: int, n_edges: int, t0: float, spaces_per_org: int = 5, orgs: int = 4) -> list[AppReport]:
    """A synthetic but consistent estate: `n_apps` apps over orgs/spaces, each with its own instance
    address and port, calling other apps (by address), DNS names and external hosts, `n_edges`
    distinct (app, destination) pairs in all. Deterministic."""
    apps: list[AppReport] = []
    for i in range(n_apps):
        org = f"org{i % orgs}"
        space = f"space{(i // orgs) % spaces_per_org}"
        ip = f"10.{240 + i // 250}.{i % 250}.{10 + i % 7}"  # data only: no packet is sent
        apps.append(AppReport(org, space, f"app-{i:03d}", fields={
            "addresses": [ip], "routes": [f"app-{i:03d}.apps.internal"],
            "listening": [seen(t0, port=8080)], "destinations": [], "dns": [],
            "processes": [seen(t0, exe="/usr/bin/python3", argv_shape=["app.py"], parent="/bin/sh")],
        }))  # fmt: skip
    per_app = max(1, n_edges // max(1, n_apps))
    k = 0
    for i, a in enumerate(apps):
        for j in range(per_app):
            kind = (i + j) % 4
            if kind <= 1:  # another app, by its instance address and listening port
                target = apps[(i * 7 + j * 13 + 1) % n_apps]
                if target is a:
                    target = apps[(i + 1) % n_apps]
                dest = seen(t0, ip=target.fields["addresses"][0], port=8080, protocol="tcp")
            elif kind == 2:  # a DNS name the app resolved
                name = f"svc{(i + j) % 150}.example.org"
                dest = seen(t0, ip=f"203.0.{113 if k % 2 else 112}.{(i + j) % 150}", port=443, names=[name])
                a.fields["dns"].append(seen(t0, name=name))
            else:  # an external host reached by address
                dest = seen(t0, ip=f"198.51.100.{(i * 3 + j) % 200 + 1}", port=5432 + j % 3, protocol="tcp")
            a.fields["destinations"].append(dest)
            k += 1
    return apps
