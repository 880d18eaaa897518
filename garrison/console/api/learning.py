"""Learning profiles, the network discovery map, and review → accept → enforce (docs/learning.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from garrison.console.api.deps import SSE_HEADERS, Ctx, Reader, Writer, still_allowed
from garrison.console.services.live import change_stream
from garrison.policy.model import RuntimePolicy

router = APIRouter(tags=["learning"])

_Name = Annotated[str | None, Query(max_length=256)]
ProfileId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ProfileState = Literal["learning", "accepted", "enforcing"]
AutoAccept = Literal["off", "window", "stable"]
_AUTO_DOC = ("accept the proposed rule by itself, in alert mode (never prevent), as user `system`: `window` once "
             "the learning window has passed, `stable` once nothing new was seen for stable_hours; `off`: an "
             "operator accepts")


class ProfileCounts(BaseModel):
    process: int
    destination: int
    dns: int
    listen: int


class ProfileSummary(BaseModel):
    id: int
    org: str
    space: str
    app: str
    state: ProfileState = Field(description="learning → accepted (rule in alert mode) → enforcing (prevent)")
    learning_since: float
    last_new_at: float | None = Field(description="when the profile last saw something new")
    last_report_at: float | None
    window_hours: float
    stable_hours: float
    window_elapsed: bool = Field(description="the learning window (time) has passed")
    stable: bool = Field(description="nothing new for stable_hours")
    ready: bool = Field(
        description="learning, something seen, and the window passed or the profile is stable"
    )
    accepted_at: float | None
    accepted_by: str
    accepted_revision: int | None
    instances: int = Field(description="distinct app instances that reported")
    counts: ProfileCounts
    addresses: list[str] = Field(description="the instances' own addresses (service identity)")
    routes: list[str]
    dropped: int = Field(default=0, description="new items refused: the profile holds 20,000 of that kind")
    auto_accept: AutoAccept = Field(default="off", description=_AUTO_DOC)


class _Item(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    first_seen: float
    last_seen: float
    count: int
    instances: int
    new_since_accept: bool


class SeenProcessOut(_Item):
    exe: str
    argv_shape: list[str]
    parent: str
    sha256: str = ""


class ServiceIdentity(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: Literal["app", "route", "dns", "external"]
    id: str = Field(description="the map node id of this destination")
    label: str


class SeenDestinationOut(_Item):
    ip: str
    port: int
    protocol: str
    names: list[str]
    service: ServiceIdentity


class SeenNameOut(_Item):
    name: str


class SeenListenOut(_Item):
    port: int
    protocol: str


class ProfileDetail(ProfileSummary):
    processes: list[SeenProcessOut]
    destinations: list[SeenDestinationOut]
    dns: list[SeenNameOut]
    listening: list[SeenListenOut]


class DiffEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    path: str = Field(description="the control, e.g. network.outbound.allow or dns.effect")
    added: list[str] | None = None
    removed: list[str] | None = None


class Proposal(BaseModel):
    profile_id: int
    rule: dict[str, Any] = Field(description="the proposed rule (a runtime policy Rule), alert mode")
    current: dict[str, Any] | None = Field(description="the rule the app has now (null: none applies)")
    diff: list[DiffEntry]
    policy_revision: int = Field(description="send it back to /accept to refuse a policy changed meanwhile")


class StartLearning(BaseModel):
    model_config = ConfigDict(extra="forbid")

    org: str = Field(min_length=1, max_length=256)
    space: str = Field(min_length=1, max_length=256)
    app: str = Field(min_length=1, max_length=256)
    window_hours: float = Field(default=24.0, gt=0, le=24 * 90)
    stable_hours: float = Field(default=4.0, gt=0, le=24 * 90)
    auto_accept: AutoAccept = Field(default="off", description=_AUTO_DOC)


class AutoAcceptBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    auto_accept: AutoAccept = Field(description=_AUTO_DOC)


class AcceptBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy_revision: int | None = Field(default=None, description="the proposal's; 409 if the policy changed")


class ProfileChange(BaseModel):
    profile: ProfileSummary
    policy: RuntimePolicy


class MapNode(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(description="app:<org>/<space>/<app> | dns:<name> | ip:<address>")
    kind: Literal["app", "dns", "external"]
    label: str


class MapEdge(BaseModel):
    id: str = Field(description="<source>-><target>")
    source: str
    target: str
    ports: list[str] = Field(description="'port/protocol'")
    names: list[str]
    count: int
    first_seen: float
    last_seen: float
    new_since_accept: bool
    denied_by_current_policy: bool
    denied_effect: str | None = Field(description="alert | prevent when denied")
    endpoints: list[dict[str, Any]] = Field(description="observed ip/port/protocol/names (at most 32)")


class MapSpace(BaseModel):
    space: str
    apps: list[str]


class MapGroup(BaseModel):
    org: str
    spaces: list[MapSpace]


class DiscoveryMap(BaseModel):
    generated_at: float
    policy_revision: int
    nodes: list[MapNode]
    edges: list[MapEdge]
    groups: list[MapGroup]
    truncated: bool = Field(description="more edges matched than `limit`")


class RuleFromSelection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["allow", "deny"]
    edges: list[Annotated[str, Field(max_length=600)]] = Field(default_factory=list, max_length=2000)
    nodes: list[Annotated[str, Field(max_length=300)]] = Field(
        default_factory=list, max_length=1000, description="every edge from or to these nodes"
    )


class SelectionChange(BaseModel):
    org: str
    space: str
    app: str
    rule: str
    action: str
    dns: list[str]
    outbound: list[str]


class SelectionResult(BaseModel):
    revision: int
    changes: list[SelectionChange]


@router.get("/profiles", response_model=list[ProfileSummary])
def list_profiles(
    c: Ctx,
    _p: Reader,
    org: _Name = None,
    space: _Name = None,
    app: _Name = None,
    state: Annotated[ProfileState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Any:
    """One profile per app (org/space/app): state, learning window, counts, instances."""
    return c.learning.summaries(org=org, space=space, app=app, state=state, limit=limit, offset=offset)


@router.post("/profiles", response_model=ProfileChange, status_code=201)
async def start_learning(body: StartLearning, c: Ctx, p: Writer) -> Any:
    """Put an app in learn mode: a rule of its own, first in the policy, with processes, network,
    listening ports and DNS in `learn`; the profile's window starts now."""
    prof, policy = await run_in_threadpool(
        c.learning.start, body.org, body.space, body.app, p.username,
        window_hours=body.window_hours, stable_hours=body.stable_hours, auto_accept=body.auto_accept,
    )  # fmt: skip
    await _pushed(c, policy)
    return {
        "profile": c.learning.summaries(org=prof["org"], space=prof["space"], app=prof["app"])[0],
        "policy": policy,
    }


@router.get("/profiles/{profile_id}", response_model=ProfileDetail)
def get_profile(profile_id: ProfileId, c: Ctx, _p: Reader) -> Any:
    """Everything the app was seen doing, with first/last seen, counts and instances; destinations
    with their service identity."""
    return c.learning.detail(profile_id, c.discovery.resolver())


@router.get("/profiles/{profile_id}/proposal", response_model=Proposal)
def get_proposal(profile_id: ProfileId, c: Ctx, _p: Reader) -> Any:
    """The rule the profile proposes and its diff against the rule the app has now."""
    return c.learning.proposal(profile_id)


@router.post("/profiles/{profile_id}/accept", response_model=ProfileChange)
async def accept(profile_id: ProfileId, c: Ctx, p: Writer, body: AcceptBody | None = None) -> Any:
    """The proposed rule goes into the runtime policy in alert mode (audited: who accepted what)."""
    rev = body.policy_revision if body is not None else None
    prof, policy = await run_in_threadpool(c.learning.accept, profile_id, p.username, rev)
    await _pushed(c, policy)
    return {"profile": _summary(c, prof), "policy": policy}


@router.put("/profiles/{profile_id}/auto-accept", response_model=ProfileSummary)
def set_auto_accept(profile_id: ProfileId, body: AutoAcceptBody, c: Ctx, p: Writer) -> Any:
    """Let the console accept this profile's proposal by itself (alert mode only) when its window
    ends or it is stable; audited as `learning.auto_accept`, the acceptance itself as `learning.accept`
    by `system`. 409 once the profile is no longer learning."""
    return _summary(c, c.learning.set_auto_accept(profile_id, body.auto_accept, p.username))


@router.post("/profiles/{profile_id}/enforce", response_model=ProfileChange)
async def enforce(profile_id: ProfileId, c: Ctx, p: Writer) -> Any:
    """Switch the accepted rule to prevent (audited)."""
    prof, policy = await run_in_threadpool(c.learning.enforce, profile_id, p.username)
    await _pushed(c, policy)
    return {"profile": _summary(c, prof), "policy": policy}


@router.get("/discovery/map", response_model=DiscoveryMap)
def discovery_map(
    c: Ctx,
    _p: Reader,
    org: _Name = None,
    space: _Name = None,
    app: _Name = None,
    since: Annotated[float | None, Query(ge=0, description="only edges seen since (UNIX seconds)")] = None,
    flagged: Annotated[
        bool, Query(description="only edges new since accept or denied by the policy")
    ] = False,
    q: Annotated[str | None, Query(max_length=256, description="part of a node's name")] = None,
    limit: Annotated[int, Query(ge=1, le=20_000)] = 5000,
) -> Any:
    """Apps (grouped by org/space) and their destinations by service identity; edges with counts,
    ports, last seen and the flags new_since_accept / denied_by_current_policy."""
    graph = c.discovery.graph(org=org, space=space, app=app, since=since, flagged=flagged, q=q, limit=limit)
    # built by the service in exactly this shape (tests check it against the schema): serialised
    # directly, a 2,000-edge map does not pay for a second validation pass
    return JSONResponse(graph)


@router.get(
    "/discovery/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def discovery_stream(c: Ctx, _p: Reader, request: Request) -> StreamingResponse:
    """Server-Sent Events for the live map: `event: map` whenever a profile got a report, was
    created, accepted or enforced, or the policy changed (at most once a second; then fetch
    `/discovery/map`), `event: hello` at the start. The credentials are re-checked every 30 s."""

    def mark() -> tuple[Any, ...]:
        return (*c.store.profiles.change_mark(), c.policies.runtime().revision)

    return StreamingResponse(change_stream(c.live, mark, still_allowed(request, c)),
                             media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/discovery/rules", response_model=SelectionResult)
async def rules_from_selection(body: RuleFromSelection, c: Ctx, p: Writer) -> Any:
    """Allow or deny the selected edges (and every edge of the selected nodes) in each source app's
    own rule, in one new policy revision (audited)."""
    out = await run_in_threadpool(
        c.discovery.rules_from_selection, body.action, body.edges, body.nodes, p.username
    )
    if c.channel is not None:
        await c.channel.notify_policy_changed()
    c.metrics.policy_revision.set(out["revision"])
    return out


def _summary(c: Any, prof: dict[str, Any]) -> dict[str, Any]:
    return c.learning.summaries(org=prof["org"], space=prof["space"], app=prof["app"])[0]


async def _pushed(c: Any, policy: RuntimePolicy) -> None:
    c.metrics.policy_revision.set(policy.revision)
    if c.channel is not None:
        await c.channel.notify_policy_changed()
