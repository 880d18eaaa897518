"""The shared policy model and pure evaluator: no kernel, no console."""

import pytest
from pydantic import ValidationError

from garrison.policy.evaluate import decide_bind, decide_connect, decide_dns, decide_exec
from garrison.policy.model import RuntimePolicy
from garrison.policy.scope import Identity, select_rule

POLICY = {
    "rules": [
        {
            "name": "payments",
            "scope": {"orgs": ["bank"], "apps": ["pay-*"]},
            "processes": {
                "effect": "prevent",
                "deny": ["/bin/sh", {"path": "*python*", "args": r"-c\b"}],
                "drift_prevention": True,
            },
            "network": {
                "effect": "prevent",
                "outbound": {"deny": ["10.0.0.0/8:22", "[::1]:80-90"]},
                "listening": {"allow": ["8080"]},
                "bad_reputation_ips": ["203.0.113.0/24"],
            },
            "dns": {"effect": "alert", "deny": ["*.evil.example"]},
        },
        {"name": "default"},
    ]
}


def test_first_matching_rule_applies() -> None:
    p = RuntimePolicy.model_validate(POLICY)
    assert select_rule(p, Identity(org="bank", app_name="pay-api")).name == "payments"  # type: ignore[union-attr]
    assert select_rule(p, Identity(org="bank", app_name="web")).name == "default"  # type: ignore[union-attr]


def test_decisions_attack_and_benign() -> None:
    r = RuntimePolicy.model_validate(POLICY).rules[0]
    assert decide_exec(r, "/bin/sh", ["sh"]).blocked
    assert decide_exec(r, "/usr/bin/python3", ["python3", "-c", "x"]).blocked
    assert not decide_exec(r, "/usr/bin/python3", ["python3", "app.py"]).violation
    assert decide_exec(r, "/tmp/dropped", ["x"], in_baseline=False).control == "processes.drift_prevention"
    assert decide_connect(r, "10.1.2.3", 22).blocked
    assert not decide_connect(r, "10.1.2.3", 23).violation
    assert decide_connect(r, "::1", 85).blocked
    assert decide_connect(r, "::ffff:203.0.113.9", 443).control == "network.bad_reputation_ips"
    d = decide_dns(r, "X.Evil.Example.")
    assert d.violation and not d.blocked and d.effect == "alert"
    assert not decide_dns(r, "ok.example").violation
    assert (
        decide_bind(r, 9000).blocked
        and not decide_bind(r, 8080).violation
        and not decide_bind(r, 0).violation
    )


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"rules": [{"name": "r", "network": {"outbound": {"deny": ["10.0.0.300/8"]}}}]}, "cidr"),
        ({"rules": [{"name": "r", "processes": {"effect": "block"}}]}, "effect"),
        ({"rules": [{"name": "r", "bogus": 1}]}, "bogus"),
        ({"rules": [{"name": "r", "network": {"listening": {"allow": ["99999"]}}}]}, "port"),
        ({"rules": [{"name": "r"}, {"name": "r"}]}, "duplicate"),
        ({"rules": [{"name": "r", "processes": {"deny": [{"args": "("}]}}]}, "regular expression"),
    ],
)
def test_bad_policy_names_the_field(bad: dict, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        RuntimePolicy.model_validate(bad)
    assert field in str(exc.value)
