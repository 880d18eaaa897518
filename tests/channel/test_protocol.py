import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from garrison.channel import protocol as p
from garrison.policy.model import Rule, RuntimePolicy


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{", "malformed"),
        ("[]", "malformed"),
        ("{}", "malformed"),
        ('{"type": "launch_missiles"}', "unsupported"),
        ('{"type": "events", "seq": "x", "events": []}', "malformed"),
        ('{"type": "events", "seq": 1, "events": [], "surprise": 1}', "malformed"),
        ('{"type": "heartbeat", "v": 99}', "unsupported"),
        (b"\xff\xfe", "malformed"),
    ],
)
def test_bad_messages_are_classified(raw: str | bytes, code: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.parse(raw)
    assert info.value.code == code


def test_round_trip_every_message() -> None:
    policy = RuntimePolicy(rules=[Rule(name="r1")], revision=3)
    msgs: list[p._Msg] = [
        p.Enrol(token="t", nonce="n" * 32, timestamp=1.0, csr_pem="csr", requested_id="a"),
        p.Enrolled(defender_id="d", cert_pem="c"),
        p.Hello(defender_id="d", app_name="app", kernel={"landlock": 6}),
        p.PolicySnapshot(revision=3, policy=policy),
        p.Events(seq=7, events=[{"type": "process", "effect": "alert"}]),
        p.Ack(seq=7, stored=1),
        p.Heartbeat(stats={"spooled": 0}),
        p.Command(id="c1", name="upload_forensics"),
        p.CommandResult(id="c1", ok=True, data={"records": []}),
        p.Error(code="malformed", message="x", fatal=True),
        p.Workloads(full=True, up=[p.Workload(container_id="c", app_name="a", protections=["exec"])], gone=["g"]),
        p.ProfileReport(
            run_id="r1", controls=["network"], addresses=["10.0.0.2"], routes=["a.apps.internal"],
            destinations=[p.SeenDestination(ip="10.0.0.3", port=8080, names=["b.apps.internal"], first_seen=1, last_seen=2)],
            processes=[p.SeenProcess(exe="/bin/sh", argv_shape=["-c", "<arg>"], first_seen=1, last_seen=1)],
        ),
    ]
    for m in msgs:
        assert p.parse(p.dump(m)) == m
    assert {m.type for m in msgs} == p.KNOWN_TYPES  # type: ignore[attr-defined]


@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda kids: (
                st.lists(kids, max_size=4)
                | st.dictionaries(
                    st.sampled_from(["type", "v", "seq", "events", "id", "token", "nonce", "x"])
                    | st.text(max_size=5),
                    kids,
                    max_size=5,
                )
            ),
            max_leaves=20,
        ).map(lambda o: json.dumps(o, allow_nan=True)),
    )
)
@settings(max_examples=300, deadline=None)
def test_parse_never_fails_other_than_protocol_error(raw: str | bytes) -> None:
    try:
        p.parse(raw)
    except p.ProtocolError as exc:
        assert exc.code in ("malformed", "unsupported") and str(exc)
    assert p.parse_event_batch(raw) is None or isinstance(p.parse_event_batch(raw), p.EventBatch)


@pytest.mark.parametrize(
    "bad",
    [
        {"run_id": "r", "destinations": [{"ip": "1.2.3.4", "port": 70000, "first_seen": 1, "last_seen": 1}]},
        {"run_id": "r", "dns": [{"name": "x" * 300, "first_seen": 1, "last_seen": 1}]},
        {"run_id": "r", "dns": [{"name": "a", "first_seen": 1, "last_seen": 1, "count": -1}]},
        {"run_id": "r", "processes": [{"exe": "/x", "sha256": "not-hex", "first_seen": 1, "last_seen": 1}]},
        {"run_id": "r", "routes": ["r"] * 65},
        {"run_id": "r", "dns": [{"name": "a", "first_seen": 1, "last_seen": 1}] * 1001},
        {"run_id": "", "controls": []},
        {"run_id": "r", "controls": ["everything"]},
    ],
)
def test_profile_reports_are_bounded(bad: dict) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.parse(json.dumps({"type": "profile", **bad}))
    assert info.value.code == "malformed"
