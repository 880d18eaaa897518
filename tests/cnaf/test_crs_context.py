"""CRS rules whose chains read the request around the value (Referer, Host), the one-scan matcher
and the benign-side checks of the CRS stage. Small rule files written for these tests (CRS syntax)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from garrison.cnaf import crs
from garrison.cnaf.crs.matcher import compile_python, to_python_regex
from garrison.cnaf.crs.ruleset import CrsRuleSet
from garrison.cnaf.crs.transforms import apply
from garrison.cnaf.engine import _crs_findings, inspect
from garrison.cnaf.fields import extract
from garrison.cnaf.request import HttpRequest
from garrison.policy.cnaf import ATTACK_CLASSES, CnafControls

SESSION = r"""
SecRule ARGS_NAMES "@rx ^(?:asp\.net_sessionid|jsessionid)$" \
    "id:943910,phase:2,block,capture,t:none,t:urlDecodeUni,t:lowercase,msg:'sid, off-domain Referer',\
    tag:'paranoia-level/1',severity:'CRITICAL',chain"
    SecRule REQUEST_HEADERS:Referer "@rx ^(?:ht|f)tps?://(.*?)\/" "capture,chain"
        SecRule TX:1 "!@endsWith %{request_headers.host}" "setvar:'tx.session_fixation_score=+5'"
SecRule ARGS_NAMES "@rx ^(?:asp\.net_sessionid|jsessionid)$" \
    "id:943920,phase:2,block,capture,t:none,t:lowercase,msg:'sid, no Referer',\
    tag:'paranoia-level/1',severity:'CRITICAL',chain"
    SecRule &REQUEST_HEADERS:Referer "@eq 0" "setvar:'tx.session_fixation_score=+5'"
"""
RFI = r"""
SecRule ARGS "@rx ^(?i:file|ftps?|https?)://([^/]*).*$" \
    "id:931930,phase:2,block,capture,t:none,msg:'Off-Domain Reference',tag:'paranoia-level/2',\
    severity:'CRITICAL',setvar:'tx.rfi_parameter_%{MATCHED_VAR_NAME}=.%{tx.1}',chain"
    SecRule TX:/rfi_parameter_.*/ "!@endsWith .%{request_headers.host}" "setvar:'tx.rfi_score=+5'"
SecRule ARGS "@rx ^(?i:file|ftps?|https?).*?\?+$" \
    "id:931920,phase:2,block,t:none,msg:'URL ending with ?',tag:'paranoia-level/1',severity:'CRITICAL'"
"""
# Several pipelines over one collection group, so the matcher's one-scan path is used.
RCE = r"""
SecRule ARGS "@rx (?:;|\|)\s*(?:cat|id)\b" "id:932910,phase:2,block,t:none,t:cmdLine,msg:'cmd',\
    tag:'paranoia-level/1',severity:'CRITICAL'"
SecRule ARGS "@rx /etc/passwd" "id:932920,phase:2,block,t:none,t:normalizePathWin,msg:'path',\
    tag:'paranoia-level/1',severity:'CRITICAL'"
SecRule ARGS "@rx select\s+\w+\s+from" "id:932930,phase:2,block,t:none,t:compressWhitespace,t:lowercase,\
    msg:'sql words',tag:'paranoia-level/2',severity:'CRITICAL'"
SecRule ARGS "@rx [{};]" "id:932940,phase:2,block,t:none,msg:'punctuation',tag:'paranoia-level/2',\
    severity:'CRITICAL'"
SecRule ARGS "@rx coffee\s+beans" "id:932950,phase:2,block,t:none,t:removeWhitespace,msg:'nospace',\
    tag:'paranoia-level/1',severity:'WARNING'"
SecRule ARGS "@rx coffeebeans" "id:932960,phase:2,block,t:none,t:removeWhitespace,msg:'joined',\
    tag:'paranoia-level/1',severity:'WARNING'"
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrsRuleSet]:
    d = tmp_path_factory.mktemp("crs-context")
    (d / "REQUEST-943-APPLICATION-ATTACK-SESSION-FIXATION.conf").write_text(SESSION)
    (d / "REQUEST-931-APPLICATION-ATTACK-RFI.conf").write_text(RFI)
    (d / "REQUEST-932-APPLICATION-ATTACK-RCE.conf").write_text(RCE)
    before = os.environ.get("GARRISON_CNAF_CACHE")
    os.environ["GARRISON_CNAF_CACHE"] = str(tmp_path_factory.mktemp("hs-cache"))
    rs = CrsRuleSet(d)
    crs.set_ruleset(rs)
    yield rs
    crs.set_ruleset(None)
    crs._loaded = crs._UNSET
    if before is None:
        del os.environ["GARRISON_CNAF_CACHE"]
    else:
        os.environ["GARRISON_CNAF_CACHE"] = before


def controls(level: int = 2) -> CnafControls:
    return CnafControls(
        effects=dict.fromkeys(ATTACK_CLASSES, "prevent"),
        crs={"paranoia_level": level, "default_exclusions": False},
    )


def req(
    target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"", ctype: str = ""
) -> HttpRequest:
    h = [("Host", "app.example.com"), *(headers or [])]
    if ctype:
        h.append(("Content-Type", ctype))
    return HttpRequest("POST" if body else "GET", target, headers=h, body=body, peer_ip="192.0.2.1")


def fired(r: HttpRequest, level: int = 2) -> set[str]:
    rs = crs.current()
    assert rs is not None
    return {f.reason.split(":")[0] for f in _crs_findings(rs, r, extract(r), controls(level), r.path, set())}


def test_chains_read_referer_and_host(rules: CrsRuleSet) -> None:
    assert {r.rule_id for r in rules.rules} >= {943910, 943920, 931930}
    assert rules.stats.skipped.get("chain on other variables") is None
    target = "/login?asp.net_sessionid=abc123"
    assert fired(req(target, [("Referer", "https://evil.example/x")])) == {"OWASP CRS 943910"}
    assert fired(req(target)) == {"OWASP CRS 943920"}  # no Referer at all
    assert fired(req(target, [("Referer", "https://app.example.com/home")])) == set()


def test_off_site_link_compares_with_the_host(rules: CrsRuleSet) -> None:
    assert fired(req("/get?x=http://evil.example/shell.txt")) == {"OWASP CRS 931930"}
    assert fired(req("/get?x=https://app.example.com/a/b")) == set()
    assert fired(req("/get?x=https://cdn.app.example.com/a")) == set()  # a subdomain of the Host
    assert fired(req("/get?x=https://app.example.com.evil.example/")) == {"OWASP CRS 931930"}
    assert fired(req("/get?x=http://evil.example/"), level=1) == set()  # a level-2 rule
    # a parameter whose name says it holds a link
    for name in ("url", "return_url", "redirect_uri", "next", "website", "callbackUrl"):
        assert fired(req(f"/go?{name}=https://evil.example/welcome")) == set(), name
    # free text that people paste links into (a search box, a comment, a message)
    for name in ("q", "search", "comment", "comment[body]", "message", "description", "reviewText"):
        assert fired(req(f"/go?{name}=https://evil.example/welcome")) == set(), name
    for name in ("page", "file", "include", "template", "qq", "bodyguard"):  # no such name
        assert fired(req(f"/go?{name}=https://evil.example/welcome")) == {"OWASP CRS 931930"}, name


def test_query_characters_the_own_pre_check_ignores_reach_crs(rules: CrsRuleSet) -> None:
    # `?` and `.`/`:` are no trigger of the CNAF's own detectors, but CRS rules read them
    found = inspect(req("/get?x=ftp?"), controls(1))
    assert [f.reason.split(":")[0] for f in found] == ["OWASP CRS 931920"]


def reference(rules: CrsRuleSet, collection: str, value: str) -> set[int]:
    """Each rule on its own: its pipeline, then its regex (what the one-scan matcher must equal)."""
    out = set()
    for rule in rules.rules:
        if rule.special or rule.context or not any(t.collection == "ARGS" for t in rule.include):
            continue
        m = next(m for p, m in rules._pipes_for[collection] if p == rule.pipeline)
        src, caseless = m._py_source[rules.rules.index(rule)]
        if compile_python(to_python_regex(src), caseless).search(apply(rule.pipeline, value)):
            out.add(rule.rule_id)
    return out


@pytest.mark.parametrize(
    "value",
    [
        "coffee beans",  # words: the inert fast path (only removeWhitespace changes it)
        "Coffee   Beans",
        "x; c'a't /etc/hosts",
        "1 | ID",
        "..\\..\\etc\\passwd",
        "SELECT   name   FROM t",
        "a {b}",
        "plain",
    ],
)
def test_one_scan_matcher_equals_rule_by_rule(rules: CrsRuleSet, value: str) -> None:
    got = {r.rule_id for r in rules._match_uncached("ARGS_GET", "q", value) if not r.context}
    assert got == reference(rules, "ARGS_GET", value)
    slow = CrsRuleSet(rules.rule_dir, use_hyperscan=False)
    assert {r.rule_id for r in slow._match_uncached("ARGS_GET", "q", value) if not r.context} == got


def test_multi_line_text_counts_level_one_rules_only(rules: CrsRuleSet) -> None:
    snippet = "for (let i = 0; i < n; i++) {\n  total += i;\n}\n"
    body = ("note=" + re.sub(r"[^A-Za-z0-9]", lambda m: f"%{ord(m.group()):02X}", snippet)).encode()
    r = req("/docs", body=body, ctype="application/x-www-form-urlencoded")
    assert fired(r) == set()  # 932940 (punctuation) is level 2
    one_line = req("/docs", body=b"note=a+%7Bb%7D", ctype="application/x-www-form-urlencoded")
    assert fired(one_line) == {"OWASP CRS 932940"}
