import pytest

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
    ]
    for m in msgs:
        assert p.parse(p.dump(m)) == m
    assert {m.type for m in msgs} == p.KNOWN_TYPES  # type: ignore[attr-defined]
