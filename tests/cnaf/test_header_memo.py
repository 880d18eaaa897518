"""The per-header-line memo of CRS hits (`engine._HeaderMemo`): what it returns is exactly what
inspecting the line gives, across policy changes, rule-set reloads, the length bound, eviction and
rules whose chains read other headers. Small rule files written for these tests (CRS syntax)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from garrison.cnaf import crs, engine
from garrison.cnaf.crs.ruleset import CrsRuleSet
from garrison.cnaf.engine import _disabled_rules, crs_hits
from garrison.cnaf.fields import extract
from garrison.cnaf.request import HttpRequest
from garrison.policy.cnaf import ATTACK_CLASSES, CnafControls

HEADERS = r"""
SecRule REQUEST_HEADERS "@rx (?:;|\|)\s*(?:cat|id)\b" "id:932911,phase:1,block,t:none,t:cmdLine,msg:'cmd',\
    tag:'paranoia-level/1',severity:'CRITICAL'"
SecRule REQUEST_HEADERS "@rx [{}]" "id:932912,phase:1,block,t:none,msg:'braces',\
    tag:'paranoia-level/2',severity:'CRITICAL'"
"""
# A header rule whose chain reads another header: its hit depends on the rest of the request.
CONTEXT = r"""
SecRule REQUEST_HEADERS:X-Session "@rx ^sid" \
    "id:943911,phase:1,block,capture,t:none,msg:'sid header, off-domain Referer',\
    tag:'paranoia-level/1',severity:'CRITICAL',chain"
    SecRule REQUEST_HEADERS:Referer "@rx ^(?:ht|f)tps?://(.*?)\/" "capture,chain"
        SecRule TX:1 "!@endsWith %{request_headers.host}" "setvar:'tx.session_fixation_score=+5'"
"""


def _ruleset(d: Path, files: dict[str, str]) -> CrsRuleSet:
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    return CrsRuleSet(d)


@pytest.fixture(scope="module")
def rulesets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CrsRuleSet, CrsRuleSet]]:
    """(header rules + context rule, context rule only)."""
    base = tmp_path_factory.mktemp("crs-memo")
    before = os.environ.get("GARRISON_CNAF_CACHE")
    os.environ["GARRISON_CNAF_CACHE"] = str(tmp_path_factory.mktemp("hs-cache"))
    full = _ruleset(
        base / "full",
        {
            "REQUEST-932-APPLICATION-ATTACK-RCE.conf": HEADERS,
            "REQUEST-943-APPLICATION-ATTACK-SESSION-FIXATION.conf": CONTEXT,
        },
    )
    small = _ruleset(base / "small", {"REQUEST-943-APPLICATION-ATTACK-SESSION-FIXATION.conf": CONTEXT})
    yield full, small
    crs.set_ruleset(None)
    crs._loaded = crs._UNSET
    if before is None:
        del os.environ["GARRISON_CNAF_CACHE"]
    else:
        os.environ["GARRISON_CNAF_CACHE"] = before


def controls(level: int = 1, disabled: list[int] | None = None) -> CnafControls:
    return CnafControls(
        effects=dict.fromkeys(ATTACK_CLASSES, "prevent"),
        crs={"paranoia_level": level, "disabled_rules": disabled or [], "default_exclusions": False},
    )


def req(headers: list[tuple[str, str]]) -> HttpRequest:
    return HttpRequest("GET", "/p", headers=[("Host", "app.example.com"), *headers], peer_ip="192.0.2.1")


def hits(rs: CrsRuleSet, r: HttpRequest, c: CnafControls) -> dict[int, str]:
    disabled = _disabled_rules(tuple(c.crs.disabled_rules), c.crs.default_exclusions)
    rs.skip(disabled)
    return {rid: fld.label for rid, (_rule, fld) in crs_hits(rs, r, extract(r), c, "/p", disabled).items()}


def cold_hits(rs: CrsRuleSet, r: HttpRequest, c: CnafControls) -> dict[int, str]:
    engine._header_memo._lines.clear()
    return hits(rs, r, c)


def test_the_memo_answers_repeated_lines_and_follows_policy_changes(
    rulesets: tuple[CrsRuleSet, CrsRuleSet],
) -> None:
    full, _ = rulesets
    r = req([("User-Agent", "Mozilla/5.0 {x}"), ("Accept", "*/* | cat /etc/passwd")])
    level1, level2 = controls(1), controls(2)
    assert set(hits(full, r, level1)) == {932911}
    assert len(engine._header_memo) >= 3  # the lines are stored…
    assert set(hits(full, r, level1)) == {932911}  # …and answer the same
    assert set(hits(full, r, level2)) == {932911, 932912}  # a new policy: the level-2 rule counts
    assert set(hits(full, r, level1)) == {932911}  # and back
    assert set(hits(full, r, controls(2, disabled=[932911]))) == {932912}  # disabled rules
    # the same value under another name: the carrier named is the request's own header
    assert hits(full, req([("X-One", "a|id")]), level1) == {932911: "header:X-One"}
    assert hits(full, req([("X-Two", "a|id")]), level1) == {932911: "header:X-Two"}


def test_a_rule_set_reload_empties_the_memo(rulesets: tuple[CrsRuleSet, CrsRuleSet]) -> None:
    full, small = rulesets
    c = controls(2)
    r = req([("User-Agent", "x | cat /etc/passwd")])
    assert hits(small, r, c) == {}
    assert set(hits(full, r, c)) == {932911}
    assert hits(small, r, c) == {}


def test_lines_at_and_over_the_length_bound(rulesets: tuple[CrsRuleSet, CrsRuleSet]) -> None:
    full, _ = rulesets
    c = controls(2)
    name = "X-Data"
    pad = engine._HeaderMemo.MAX_LINE - len(name)
    at = "a" * (pad - 6) + "| id {"  # exactly the bound: stored
    over = "a" * (pad - 5) + "| id {"  # one more: inspected every time, never stored
    engine._header_memo._lines.clear()
    assert set(hits(full, req([(name, at)]), c)) == {932911, 932912}
    assert (name, at) in engine._header_memo._lines
    for _ in range(2):
        assert set(hits(full, req([(name, over)]), c)) == {932911, 932912}
        assert (name, over) not in engine._header_memo._lines


def test_eviction_keeps_the_bound_and_evicted_lines_are_inspected_again(
    rulesets: tuple[CrsRuleSet, CrsRuleSet], monkeypatch: pytest.MonkeyPatch
) -> None:
    full, _ = rulesets
    c = controls(1)
    monkeypatch.setattr(engine._HeaderMemo, "MAX_ENTRIES", 8)
    engine._header_memo._lines.clear()
    bad = req([("User-Agent", "t| cat x")])
    assert set(hits(full, bad, c)) == {932911}
    hits(full, bad, c)  # used again: the least recently used line is another one
    for i in range(20):
        hits(full, req([("User-Agent", f"agent {i}")]), c)
        assert len(engine._header_memo) <= 8
    assert ("User-Agent", "t| cat x") not in engine._header_memo._lines
    assert set(hits(full, bad, c)) == {932911}


def test_lines_whose_rules_read_other_headers_are_not_memoised(
    rulesets: tuple[CrsRuleSet, CrsRuleSet],
) -> None:
    full, _ = rulesets
    c = controls(1)
    assert any(r.rule_id == 943911 and r.context for r in full.rules)
    line = ("X-Session", "sid=abc")
    off = req([line, ("Referer", "https://evil.example/x")])
    own = req([line, ("Referer", "https://app.example.com/home")])
    for _ in range(2):
        assert 943911 in hits(full, off, c)
        assert 943911 not in hits(full, own, c)
    assert line not in engine._header_memo._lines


def test_memoised_hits_equal_cold_inspection_on_random_requests(
    rulesets: tuple[CrsRuleSet, CrsRuleSet],
) -> None:
    full, small = rulesets
    rnd = random.Random(12)
    parts = ["Mozilla/5.0", "| cat /x", "|id", "{", "}", "sid=1", "text/html", "  ", "é", "x" * 40]
    names = ["User-Agent", "Accept", "X-Evil-A", "X-Session", "Referer", "Cookie"]
    policies = [controls(1), controls(2), controls(3, disabled=[932912])]
    for _ in range(400):
        rs = rnd.choice((full, full, small))
        c = rnd.choice(policies)
        headers = [
            (rnd.choice(names), "".join(rnd.choice(parts) for _ in range(rnd.randint(0, 3))))
            for _ in range(rnd.randint(0, 4))
        ]
        if rnd.random() < 0.5:
            headers.append(("Referer", rnd.choice(["https://evil.example/a", "https://app.example.com/b"])))
        r = req(headers)
        warm = hits(rs, r, c)
        assert warm == cold_hits(rs, r, c), headers
