"""The `learn` effect: which controls learn, and the enforcing view every decision point sees."""

from __future__ import annotations

from garrison.policy.evaluate import decide_bind, decide_connect, decide_dns, decide_exec
from garrison.policy.learning import enforcing_view, learning_controls
from garrison.policy.model import Rule, RuntimePolicy
from garrison.policy.scope import Identity, select_rule, select_rule_raw


def _rule(**kw: object) -> Rule:
    return Rule.model_validate({"name": "r", **kw})


def test_learning_controls_and_listening_override() -> None:
    r = _rule(network={"effect": "learn"})
    assert learning_controls(r) == {"network", "listening"}
    r = _rule(network={"effect": "learn", "listening": {"effect": "prevent", "allow": ["8080"]}})
    assert learning_controls(r) == {"network"}
    assert learning_controls(_rule(processes={"effect": "learn"}, dns={"effect": "learn"})) == {
        "processes",
        "dns",
    }
    assert learning_controls(_rule()) == frozenset()


def test_learning_allows_what_is_being_learned_but_deny_entries_still_alert() -> None:
    r = _rule(
        processes={"effect": "learn", "allow": ["/bin/true"], "deny": ["nc"]},
        network={"effect": "learn", "outbound": {"allow": ["10.0.0.1:80"], "deny": ["10.9.0.0/16"]},
                 "listening": {"allow": ["8080"]}},
        dns={"effect": "learn", "allow": ["a.example"], "deny": ["evil.example"]},
    )  # fmt: skip
    v = enforcing_view(r)
    assert v is enforcing_view(r)  # cached: identity checks on the selected rule keep working
    assert not decide_exec(v, "/usr/bin/python3", ["python3"]).violation
    d = decide_exec(v, "/usr/bin/nc", ["nc"])
    assert d.violation and d.effect == "alert" and not d.blocked
    assert not decide_connect(v, "192.0.2.7", 443, "tcp", pinned_names=[]).violation
    d = decide_connect(v, "10.9.1.1", 443, "tcp")
    assert d.violation and not d.blocked
    assert not decide_dns(v, "b.example").violation
    assert decide_dns(v, "evil.example").effect == "alert"
    assert not decide_bind(v, 9999).violation


def test_select_rule_gives_the_view_and_raw_the_rule() -> None:
    r = _rule(network={"effect": "learn", "outbound": {"allow": ["10.0.0.1:80"]}})
    policy = RuntimePolicy(rules=[r])
    assert select_rule_raw(policy, Identity()) is r
    view = select_rule(policy, Identity())
    assert view is not None and view.network.effect == "alert" and not view.network.outbound.allow
    plain = _rule(network={"effect": "prevent"})
    assert select_rule(RuntimePolicy(rules=[plain]), Identity()) is plain


def test_listening_effect_override_decides_binds() -> None:
    r = _rule(network={"effect": "alert", "listening": {"effect": "prevent", "allow": ["8080"]}})
    assert decide_bind(r, 9000).blocked
    assert not decide_bind(r, 8080).violation
    r = _rule(network={"effect": "prevent", "listening": {"effect": "disable", "allow": ["8080"]}})
    assert not decide_bind(r, 9000).violation


def test_long_app_names_get_distinct_rules() -> None:
    from garrison.console.services.learning import app_scope, rule_name

    a, b = rule_name("o", "s", "x" * 250 + "a"), rule_name("o", "s", "x" * 250 + "b")
    assert a != b and len(a) <= 200 and len(b) <= 200
    assert rule_name("o", "s", "shop") == "learned: o/s/shop"
    scope = app_scope("o*", "s", "a?[b]")
    assert scope.orgs == ["o[*]"] and scope.apps == ["a[?][[]b[]]"]
    from garrison.policy.scope import Identity, scope_matches

    assert scope_matches(scope, Identity(org="o*", space="s", app_name="a?[b]"))
    assert not scope_matches(scope, Identity(org="ox", space="s", app_name="a?[b]"))
