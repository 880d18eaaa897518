"""Which rule applies to a defender: first enabled rule whose scope matches (Prisma semantics)."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from garrison.policy.learning import enforcing_view
from garrison.policy.model import Rule, RuntimePolicy, Scope


@dataclass(frozen=True)
class Identity:
    """What a defender knows about the app it protects (from VCAP_APPLICATION and DEFENDER_APP_ID)."""

    app_id: str = ""
    app_name: str = ""
    org: str = ""
    space: str = ""
    app_guid: str = ""
    instance: int = 0


def _any(globs: list[str], value: str) -> bool:
    return any(fnmatchcase(value, g) for g in globs)


def scope_matches(scope: Scope, ident: Identity) -> bool:
    ids = [v for v in (ident.app_id, ident.app_guid) if v] or [""]
    return (
        _any(scope.orgs, ident.org)
        and _any(scope.spaces, ident.space)
        and _any(scope.apps, ident.app_name)
        and any(_any(scope.app_ids, v) for v in ids)
    )


def select_rule_raw(policy: RuntimePolicy, ident: Identity) -> Rule | None:
    """The rule as written (it may have controls in `learn` mode)."""
    for rule in policy.rules:
        if not rule.disabled and scope_matches(rule.scope, ident):
            return rule
    return None


def select_rule(policy: RuntimePolicy, ident: Identity) -> Rule | None:
    """The rule to enforce: learning controls come as their enforcing view (policy/learning.py)."""
    rule = select_rule_raw(policy, ident)
    return enforcing_view(rule) if rule is not None else None
