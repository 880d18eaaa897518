"""Cells (hosts): posture list, per-cell view, reports and events sent by cells, the cell policy."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from garrison.console.api.deps import Admin, Ctx, Reader, Writer
from garrison.host.model import CisReport, HostEvent
from garrison.host.posture import CellPolicy
from garrison.scan.model import ScanReport

router = APIRouter(prefix="/hosts", tags=["hosts"])

HostName = Annotated[str, Path(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class Judgement(BaseModel):
    verdict: str
    reasons: list[str]


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[HostEvent] = Field(max_length=1000)


class Ingested(BaseModel):
    received: int
    new: int


def _host_or_404(c: Ctx, name: str) -> dict[str, Any]:
    row = c.hosts.detail(name)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no host {name!r}")
    return row


@router.get("")
def list_hosts(
    c: Ctx,
    _p: Reader,
    verdict: Annotated[str | None, Query(pattern="^(pass|fail|unknown)$")] = None,
    q: Annotated[str | None, Query(max_length=253, description="part of the host name")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[dict[str, Any]]:
    """Every cell with its posture: verdict, CIS score, vulnerabilities, FIM changes, logins."""
    return c.store.hosts.search(verdict=verdict, q=q, limit=limit, offset=offset)


@router.get("/export.csv", response_class=StreamingResponse, responses={200: {"content": {"text/csv": {}}}})
def export_hosts(
    c: Ctx,
    _p: Reader,
    verdict: Annotated[str | None, Query(pattern="^(pass|fail|unknown)$")] = None,
    q: Annotated[str | None, Query(max_length=253)] = None,
) -> StreamingResponse:
    rows = c.store.hosts.search(verdict=verdict, q=q, limit=100_000, offset=0)
    return StreamingResponse(
        c.hosts.csv_lines(rows), media_type="text/csv",
        headers={"content-disposition": 'attachment; filename="hosts.csv"'},
    )


@router.get("/policy", response_model=CellPolicy)
def get_cell_policy(c: Ctx, _p: Reader) -> CellPolicy:
    return c.hosts.policy()


@router.put("/policy", response_model=CellPolicy)
def put_cell_policy(policy: CellPolicy, c: Ctx, p: Admin) -> CellPolicy:
    c.hosts.set_policy(policy)
    c.store.mgmt.record(p.username, "policy.cell.update", policy.name)
    return policy


@router.get("/{name}")
def get_host(name: HostName, c: Ctx, _p: Reader) -> dict[str, Any]:
    """Posture, CIS score trend, and the latest 100 host events of one cell."""
    return _host_or_404(c, name)


@router.get("/{name}/cis/latest")
def get_latest_cis(name: HostName, c: Ctx, _p: Reader) -> dict[str, Any]:
    """The newest CIS run with every rule's result, severity and remediation."""
    _host_or_404(c, name)
    rows = c.store.hosts.reports(name, "cis", 1, with_body=True)
    if not rows:
        raise HTTPException(status_code=404, detail=f"no CIS run reported by {name!r}")
    return rows[0]["body"]


@router.get("/{name}/events")
def get_host_events(
    name: HostName,
    c: Ctx,
    _p: Reader,
    type: Annotated[str | None, Query(pattern="^(fim|access|compliance)$")] = None,
    since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[dict[str, Any]]:
    _host_or_404(c, name)
    return c.store.hosts.events(name, type=type, since=since, limit=limit, offset=offset)


@router.post("/{name}/cis", response_model=Judgement, status_code=201)
def post_cis(name: HostName, report: CisReport, c: Ctx, _p: Writer) -> Any:
    """A CIS run of the cell; judged against the cell policy (a drift event if a passing cell fails)."""
    return c.hosts.report_cis(name, report)


@router.post("/{name}/scan", response_model=Judgement, status_code=201)
def post_scan(name: HostName, report: ScanReport, c: Ctx, _p: Writer) -> Any:
    """A host scan of the cell (packages, vulnerabilities, malware), judged against the cell policy."""
    return c.hosts.report_scan(name, report)


@router.post("/{name}/events", response_model=Ingested, status_code=201)
def post_events(name: HostName, batch: EventBatch, c: Ctx, _p: Writer) -> Any:
    """File-integrity, access and compliance events; re-sent events (same id) are stored once."""
    return {"received": len(batch.events), "new": c.hosts.ingest_events(name, batch.events)}


@router.delete("/{name}", status_code=204)
def delete_host(name: HostName, c: Ctx, p: Admin) -> None:
    if not c.store.hosts.remove(name):
        raise HTTPException(status_code=404, detail=f"no host {name!r}")
    c.store.mgmt.record(p.username, "host.delete", name)


class BoshAddon(BaseModel):
    runtime_config: str = Field(description="`bosh update-runtime-config --name garrison` input")
    token_id: int = Field(description="the API token minted for the cells (revoke it under API tokens)")


@router.post("/bosh-addon", response_model=BoshAddon, status_code=201)
def bosh_addon(c: Ctx, p: Writer) -> Any:
    """The runtime-config add-on that places the garrison-cell job on every Diego cell, with this
    console's address and CA, a new API token for the cells' reports, an install bundle that enrols
    each cell defender with the console (cell defenders only), and the current runtime policy (used
    until the console answers). The token and bundle are shown only here."""
    import yaml

    from garrison.console.api.defenders import make_bundle

    token_id, token = c.auth.issue_token(p.username, name="garrison-cell-addon", ttl_s=None)
    c.store.mgmt.record(p.username, "hosts.bosh_addon", c.console_url, {"token_id": token_id})
    bundle = make_bundle(c, p.username, c.ws_address, {}, "cell")  # enrols cell defenders only
    policy = c.policies.runtime().model_dump(mode="json", exclude={"revision"})
    doc = {
        "releases": [{"name": "garrison", "version": "latest"}],
        "addons": [{
            "name": "garrison-cell",
            "include": {"jobs": [{"name": "rep", "release": "diego"}]},
            "jobs": [{"name": "garrison-cell", "release": "garrison", "properties": {"garrison": {
                "console": {"url": c.console_url, "token": token, "ca_cert": c.ca.cert_pem.decode()},
                "cell": {"policy": policy, "install_bundle": bundle},
            }}}],
        }],
    }
    header = ("# bosh update-runtime-config --name garrison garrison-runtime-config.yml\n"
              "# places the garrison-cell job (cell defender + host agent) on every Diego cell\n")
    return {"runtime_config": header + yaml.safe_dump(doc, sort_keys=False), "token_id": token_id}
