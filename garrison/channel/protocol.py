"""Wire format of the defender channel: one JSON object per WebSocket text message.

Every message carries `type` (the discriminator) and `v` (protocol version). Models forbid unknown
fields so a peer's mistake is reported instead of silently ignored. Event batches carry events as
plain objects: the server validates each one on its own so a single bad event cannot poison (and
endlessly re-send) a whole batch.

Flow::

    no client cert:  enrol ──▶ enrolled | error          (then the defender reconnects with its cert)
    client cert:     hello ──▶ policy {revision, policy}  (and a new `policy` on every change)
                     events{seq} ──▶ ack{seq}             (at-least-once; the store dedups by event id)
                     heartbeat ──▶ (nothing)
                     ◀── command{id, name, args} ; command_result{id, ok, data|error} ──▶
                     workloads{full, up, gone} ──▶ (cell defenders: the app containers on the cell)
                     any malformed message ──▶ error{code, message, fatal}
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from garrison.policy.audit import AuditEvent
from garrison.policy.model import RuntimePolicy

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_EVENTS_PER_BATCH = 5000


_CONFIG = ConfigDict(extra="forbid", defer_build=True)
"""`defer_build`: a model's validator is built the first time it is used, not at import. The
app-embedded defender imports this module for `Hello` alone when it runs on a policy file, and every
schema built at import was start-up time added to the app."""


class _Msg(BaseModel):
    model_config = _CONFIG

    v: int = Field(default=PROTOCOL_VERSION, ge=1)


MAX_INSTANCE = 2**31 - 1
Name = Annotated[str, StringConstraints(max_length=256)]
_Key = Annotated[str, StringConstraints(min_length=1, max_length=64)]
_Scalar = Annotated[str, StringConstraints(max_length=512)] | StrictInt | StrictFloat | StrictBool | None
Features = Annotated[
    dict[_Key, _Scalar | Annotated[list[_Scalar], Field(max_length=32)]],
    Field(max_length=64),
]
"""Defender-supplied maps (kernel features, heartbeat stats): at most 64 small entries, so a defender
cannot make the console store and serve back megabytes (issue 10 #4)."""


class AppIdentity(BaseModel):
    """Which app instance a defender protects, as the defender sees it (VCAP_APPLICATION).

    Claimed at enrolment: a scoped install bundle only enrols the org/space/app it was made for, and
    the console binds the defender id to this identity (later `hello`s cannot change it)."""

    model_config = _CONFIG

    app_id: Name = ""
    app_name: Name = ""
    org: Name = ""
    space: Name = ""
    app_guid: Name = ""
    instance: int = Field(default=0, ge=0, le=MAX_INSTANCE)


DefenderType = Literal["app-embedded", "cell"]
"""`app-embedded`: one defender per app instance, inside it; `cell`: one privileged defender per Diego
cell reporting for every app container on it (each container is one workload)."""


class Enrol(_Msg):
    type: Literal["enrol"] = "enrol"
    token: str = Field(min_length=1, max_length=4096)
    nonce: str = Field(min_length=16, max_length=128)
    timestamp: float = Field(allow_inf_nan=False)
    csr_pem: str = Field(min_length=1, max_length=16384)
    requested_id: str = Field(default="", max_length=256, description="a readable prefix for the id")
    app: AppIdentity | None = Field(default=None, description="the app instance this defender protects")
    defender_type: DefenderType = Field(
        default="app-embedded", description="a cell defender needs a bundle made for cells"
    )


class Enrolled(_Msg):
    type: Literal["enrolled"] = "enrolled"
    defender_id: str
    cert_pem: str


class Hello(_Msg):
    type: Literal["hello"] = "hello"
    defender_id: str = Field(default="", max_length=256, description="ignored: the certificate CN wins")
    app_id: str = Field(default="", max_length=256)
    app_name: str = Field(default="", max_length=256)
    org: str = Field(default="", max_length=256)
    space: str = Field(default="", max_length=256)
    app_guid: str = Field(default="", max_length=256)
    instance: int = Field(default=0, ge=0, le=MAX_INSTANCE)
    version: str = Field(default="", max_length=64)
    hostname: str = Field(default="", max_length=256)
    kernel: Features = Field(default_factory=dict)
    policy_revision: int | None = Field(default=None, description="revision the defender already has")
    droplet_digest: str = Field(
        default="",
        max_length=128,
        description="sha256 digest of the droplet (buildpack profile.d), for the gate",
    )


MAX_WORKLOADS = 2000
"""per message; a Diego cell runs at most a few hundred containers"""


class Workload(AppIdentity):
    """One app container a cell defender protects, with the CF identity from its environment."""

    container_id: str = Field(min_length=1, max_length=256)
    rule: Name = Field(default="", description="the rule that applies (first whose scope matches)")
    started_at: float | None = Field(default=None, allow_inf_nan=False, description="app start (cell clock)")
    seen_at: float = Field(default=0.0, allow_inf_nan=False, description="when the defender saw the change")
    protections: Annotated[list[Annotated[str, StringConstraints(max_length=64)]], Field(max_length=16)] = Field(
        default_factory=list, description="what is on for it: exec, network, dns, pids, ..."
    )
    listening: Annotated[list[Annotated[str, StringConstraints(max_length=16)]], Field(max_length=256)] = Field(
        default_factory=list, description="listening sockets, e.g. tcp/8080 (read once a second)"
    )


class Workloads(_Msg):
    """A cell defender's containers: `full` = the complete set (sent on every connection; containers
    not in it are gone), else changes: `up` added or updated, `gone` stopped (container ids)."""

    type: Literal["workloads"] = "workloads"
    full: bool = False
    up: list[Workload] = Field(default_factory=list, max_length=MAX_WORKLOADS)
    gone: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=MAX_WORKLOADS
    )


class DropletVerdict(BaseModel):
    """The console's assurance verdict for the droplet named in `hello` (the run-time gate)."""

    model_config = _CONFIG

    digest: str = Field(max_length=128)
    verdict: Literal["pass", "fail", "unknown"]
    effect: Literal["disable", "alert", "prevent"] = "alert"
    reasons: list[str] = Field(default_factory=list, max_length=1000)


class PolicySnapshot(_Msg):
    type: Literal["policy"] = "policy"
    revision: int
    policy: RuntimePolicy
    verdict: DropletVerdict | None = Field(
        default=None, description="only in the first snapshot, when the hello named a droplet digest"
    )


class Events(_Msg):
    type: Literal["events"] = "events"
    seq: int = Field(ge=0)
    events: list[Any] = Field(max_length=MAX_EVENTS_PER_BATCH, description="AuditEvent objects")


class EventBatch(_Msg):
    """Events with every event already valid: the server's fast path (one pydantic-core pass from
    JSON to models). Anything that fails it goes through `Events` and per-event checks instead."""

    type: Literal["events"] = "events"
    seq: int = Field(ge=0)
    events: list[AuditEvent] = Field(max_length=MAX_EVENTS_PER_BATCH)


class Ack(_Msg):
    type: Literal["ack"] = "ack"
    seq: int
    stored: int = 0
    rejected: int = 0


class Heartbeat(_Msg):
    type: Literal["heartbeat"] = "heartbeat"
    stats: Features = Field(default_factory=dict)


MAX_PROFILE_ITEMS = 1000
"""items of all kinds in one `profile` message (the defender splits bigger reports)"""
_Count = Annotated[int, Field(ge=0, le=2**62)]
_Time = Annotated[float, Field(ge=0, le=2**40, allow_inf_nan=False)]
_Host = Annotated[str, StringConstraints(min_length=1, max_length=253)]


class _Seen(BaseModel):
    """Cumulative since the defender run started (`run_id`): a re-sent report changes nothing."""

    model_config = _CONFIG

    count: _Count = 1
    first_seen: _Time
    last_seen: _Time


class SeenProcess(_Seen):
    exe: str = Field(min_length=1, max_length=4096)
    argv_shape: list[Annotated[str, StringConstraints(max_length=256)]] = Field(
        default_factory=list, max_length=16, description="argv[1:] with variable parts as <n>, <hex>, <path>"
    )
    parent: str = Field(default="", max_length=4096, description="executable of the parent process")
    sha256: str = Field(default="", max_length=64, pattern="^[0-9a-f]*$", description="identity of the file")


class SeenDestination(_Seen):
    ip: str = Field(min_length=2, max_length=64)
    port: int = Field(ge=0, le=65535)
    protocol: Literal["tcp", "udp", ""] = "tcp"
    names: list[_Host] = Field(default_factory=list, max_length=8, description="DNS names that resolved to ip")


class SeenName(_Seen):
    name: _Host


class SeenListen(_Seen):
    port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp", ""] = "tcp"


ProfileControl = Literal["processes", "network", "listening", "dns"]


class ProfileWorkload(AppIdentity):
    """The container a cell defender's report describes (a cell reports for every app on it); the
    console files it under the identity the cell reported for that container, never this claim alone."""

    container_id: str = Field(min_length=1, max_length=256)


class ProfileRefused(ValueError):
    """A learning report the console does not file: its workload is not one the defender reported."""


class ProfileReport(_Msg):
    """What a defender in learn mode saw: aggregated counts, never one message per call.
    Items are cumulative for (defender, run_id); only items that changed since the last report are
    sent, and the whole set now and then, so a lost report heals."""

    type: Literal["profile"] = "profile"
    run_id: str = Field(min_length=1, max_length=64, description="one defender process run")
    controls: list[ProfileControl] = Field(default_factory=list, max_length=4)
    addresses: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list, max_length=16, description="the instance's own IPs (CF_INSTANCE_INTERNAL_IP, ...)"
    )
    routes: list[_Host] = Field(
        default_factory=list, max_length=64, description="the app's routes (VCAP_APPLICATION uris)"
    )
    processes: list[SeenProcess] = Field(default_factory=list, max_length=MAX_PROFILE_ITEMS)
    destinations: list[SeenDestination] = Field(default_factory=list, max_length=MAX_PROFILE_ITEMS)
    dns: list[SeenName] = Field(default_factory=list, max_length=MAX_PROFILE_ITEMS)
    listening: list[SeenListen] = Field(default_factory=list, max_length=256)
    dropped: _Count = Field(default=0, description="distinct items the defender could not keep (its bound)")
    workload: ProfileWorkload | None = Field(
        default=None, description="cell defenders only: the container (workload) the report describes"
    )


class Command(_Msg):
    type: Literal["command"] = "command"
    id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=64, description="e.g. 'upload_forensics'")
    args: dict[str, Any] = Field(default_factory=dict)


class CommandResult(_Msg):
    type: Literal["command_result"] = "command_result"
    id: str = Field(min_length=1, max_length=64)
    ok: bool
    data: Any = None
    error: str = Field(default="", max_length=4096)


ErrorCode = Literal[
    "malformed",  # not JSON / not an object / fails the schema
    "unsupported",  # unknown type or protocol version
    "unauthenticated",  # needs a defender certificate
    "enrolment_refused",
    "revoked",
    "rejected_events",
    "internal",
    "replaced",  # another connection with the same defender id took over
    "too_slow",  # the defender does not read fast enough; reconnect for a fresh snapshot
    "rate_limited",  # over the defender's budget of learning reports (per minute)
    "profile_refused",  # a learning report for a workload this defender may not report for
]


class Error(_Msg):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str = Field(max_length=4096)
    fatal: bool = False
    ref: str = Field(default="", max_length=64, description="seq/command id this error refers to")


Message = Annotated[
    Enrol
    | Enrolled
    | Hello
    | PolicySnapshot
    | Events
    | Ack
    | Heartbeat
    | Command
    | CommandResult
    | Error
    | Workloads
    | ProfileReport,
    Field(discriminator="type"),
]


@cache
def _adapter() -> TypeAdapter[Message]:
    """Built on first use (see `_CONFIG`)."""
    return TypeAdapter(Message)

KNOWN_TYPES = frozenset(
    {
        "enrol",
        "enrolled",
        "hello",
        "policy",
        "events",
        "ack",
        "heartbeat",
        "command",
        "command_result",
        "error",
        "workloads",
        "profile",
    }
)


class ProtocolError(ValueError):
    """A message that cannot be understood; `code` is the Error code to answer with."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code


def parse(raw: str | bytes) -> Message:
    """Decode one wire message, raising ProtocolError with a short, peer-safe explanation."""
    try:
        obj = _adapter().validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid"}
        if first["type"] == "json_invalid":
            raise ProtocolError("malformed", "message is not valid JSON") from None
        if first["type"] in ("model_attributes_type", "model_type"):
            raise ProtocolError("malformed", "message is not a JSON object") from None
        if first["type"] == "union_tag_not_found":
            raise ProtocolError("malformed", "message has no 'type' field") from None
        if first["type"] == "union_tag_invalid":
            raise ProtocolError("unsupported", "unknown message type") from None
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'message'}: {e['msg']}" for e in errors[:5]
        )
        raise ProtocolError("malformed", f"invalid message: {detail}") from None
    if obj.v > PROTOCOL_VERSION:
        raise ProtocolError("unsupported", f"protocol version {obj.v} not supported (max {PROTOCOL_VERSION})")
    return obj


def parse_event_batch(raw: str | bytes) -> EventBatch | None:
    """The whole batch validated at once, or None when it is not a fully valid event batch."""
    head = raw[:64].decode(errors="replace") if isinstance(raw, bytes) else raw[:64]
    if '"type":"events"' not in head.replace(" ", ""):
        return None
    try:
        batch = EventBatch.model_validate_json(raw)
    except ValidationError:
        return None
    return batch if batch.v <= PROTOCOL_VERSION else None


def dump(msg: _Msg) -> str:
    return msg.model_dump_json()
