"""Many containers on one cell held by one cell defender: every one discovered, given its own
identity and rule, and enforced (the 250-container figure is bench/cell_scale.py's)."""

from __future__ import annotations

from typing import Any

from garrison.policy.model import RuntimePolicy
from tests.cell.conftest import START_SH

N = 16


def test_one_defender_protects_every_container_on_the_cell(garden: Any, defender: Any) -> None:
    policy = RuntimePolicy.model_validate({"rules": [
        {"name": "quiet", "scope": {"apps": ["app-3"]}, "processes": {"effect": "alert", "deny": ["wget"]}},
        {"name": "cell", "processes": {"effect": "prevent", "deny": ["wget"], "drift_prevention": True}},
    ]})
    d, audits = defender(policy)
    made = [garden(app=f"app-{i}", index=i) for i in range(N)]
    for c in made:
        c.run_app(START_SH)
    for i, c in enumerate(made):
        ev = audits.wait(lambda e, c=c: e.control == "cell.container_protected" and e.extra["container"] == c.id,
                         timeout=30)
        assert (ev.app_name, ev.instance) == (f"app-{i}", i)
        assert ev.rule == ("quiet" if i == 3 else "cell")
    assert {x.id for x in d.containers()} == {c.id for c in made}
    for i, c in enumerate(made):
        r = c.exec("/bin/wget", "--help")
        if i == 3:
            assert r.returncode in (0, 1)  # alert: ran
        else:
            assert r.returncode != 0 and "not permitted" in r.stderr.lower(), (c.id, r.stderr)
        audits.wait(lambda e, c=c: e.exe == "/bin/wget" and e.extra["container"] == c.id)
    for c in made[: N // 2]:
        c.delete()
    for c in made[: N // 2]:
        audits.wait(lambda e, c=c: e.control == "cell.container_gone" and e.extra["container"] == c.id)
    assert {x.id for x in d.containers()} == {c.id for c in made[N // 2:]}
