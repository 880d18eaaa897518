"""CRS rules read from disk: the SecLanguage reader, transformations, matcher, scoring, degradation.

The rule files here are small ones written for these tests (same syntax as OWASP CRS), so the
tests do not depend on which CRS version is installed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from garrison.cnaf import crs
from garrison.cnaf.crs.matcher import HYPERSCAN_AVAILABLE
from garrison.cnaf.crs.ruleset import CrsRuleSet
from garrison.cnaf.crs.seclang import parse_file
from garrison.cnaf.crs.transforms import cmd_line
from garrison.cnaf.engine import _crs_findings, inspect
from garrison.cnaf.fields import extract
from garrison.cnaf.request import HttpRequest
from garrison.policy.cnaf import ATTACK_CLASSES, CnafControls

SQLI = r"""
# comment lines and set-up directives are ignored
SecMarker BEGIN
SecRule TX:EXECUTING_PARANOIA_LEVEL "@lt 1" "id:942011,phase:1,pass,nolog,skipAfter:END"
SecRule REQUEST_COOKIES|!REQUEST_COOKIES:/__utm/|REQUEST_COOKIES_NAMES|ARGS_NAMES|ARGS|XML:/* \
    "@rx (?i)\bunion\b.{1,100}?\bselect\b" \
    "id:942901,\
    phase:2,\
    block,\
    t:none,t:urlDecodeUni,t:lowercase,\
    msg:'Union select',\
    tag:'paranoia-level/1',\
    severity:'CRITICAL'"
SecRule ARGS "@detectSQLi" "id:942902,phase:2,block,t:none,msg:'libinjection',tag:'paranoia-level/1',severity:'CRITICAL'"
SecRule ARGS "@rx \bor\b" "id:942903,phase:2,block,t:none,msg:'or',tag:'paranoia-level/2',severity:'WARNING'"
SecRule ARGS "@rx =" "id:942904,phase:2,block,t:none,msg:'equals',tag:'paranoia-level/2',severity:'NOTICE'"
SecRule ARGS_GET "@rx [\n\r]" "id:942905,phase:2,block,t:none,msg:'newline in query',tag:'paranoia-level/1',severity:'CRITICAL'"
SecRule TX:foo "@eq 1" "id:942906,phase:2,block,msg:'tx',severity:'CRITICAL'"
"""
RCE = r"""
SecRule ARGS|REQUEST_COOKIES "@pmFromFile unix-cmds.data" \
    "id:932901,phase:2,block,t:none,t:cmdLine,msg:'unix command',tag:'paranoia-level/1',severity:'CRITICAL',chain"
    SecRule MATCHED_VARS "@rx /" "t:none"
"""
LFI = r"""
SecRule REQUEST_HEADERS|!REQUEST_HEADERS:Referer|ARGS "@rx (?:^|[\\/])\.\.(?:[\\/]|$)" \
    "id:930901,phase:2,block,t:none,msg:'Path Traversal',tag:'paranoia-level/1',severity:'CRITICAL'"
SecRule REQUEST_FILENAME "@pm .git/ .htpasswd" \
    "id:930902,phase:2,block,t:none,t:normalizePathWin,msg:'restricted file',tag:'paranoia-level/1',severity:'CRITICAL'"
"""


@pytest.fixture(scope="module")
def rule_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("crs-rules")
    (d / "REQUEST-942-APPLICATION-ATTACK-SQLI.conf").write_text(SQLI)
    (d / "REQUEST-932-APPLICATION-ATTACK-RCE.conf").write_text(RCE)
    (d / "REQUEST-930-APPLICATION-ATTACK-LFI.conf").write_text(LFI)
    (d / "unix-cmds.data").write_text("# commands\ncat\nwget\n")
    (d / "REQUEST-949-BLOCKING-EVALUATION.conf").write_text(
        "SecRule TX:ANOMALY_SCORE \"@ge 5\" \"id:949110,phase:2,deny,msg:'block',severity:'CRITICAL'\"\n"
    )
    return d


@pytest.fixture(scope="module")
def rules(rule_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrsRuleSet]:
    import os

    before = os.environ.get("GARRISON_CNAF_CACHE")
    os.environ["GARRISON_CNAF_CACHE"] = str(tmp_path_factory.mktemp("hs-cache"))
    yield CrsRuleSet(rule_dir)
    if before is None:  # later modules load the installed CRS from the user's cache again
        del os.environ["GARRISON_CNAF_CACHE"]
    else:
        os.environ["GARRISON_CNAF_CACHE"] = before


@pytest.fixture
def installed(rules: CrsRuleSet) -> Iterator[CrsRuleSet]:
    """Make the test rule set the process-wide one for `inspect`."""
    crs.set_ruleset(rules)
    yield rules
    crs.set_ruleset(None)
    crs._loaded = crs._UNSET  # next caller loads the installed CRS again


def controls(level: int = 1, threshold: int = 5, disabled: list[int] | None = None) -> CnafControls:
    return CnafControls(
        effects=dict.fromkeys(ATTACK_CLASSES, "prevent"),
        crs={
            "paranoia_level": level,
            "anomaly_threshold": threshold,
            "disabled_rules": disabled or [],
            "default_exclusions": False,
        },
    )


def req(
    target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"", ctype: str = ""
) -> HttpRequest:
    h = [("Host", "app.example.com"), ("User-Agent", "Mozilla/5.0"), *(headers or [])]
    if ctype:
        h.append(("Content-Type", ctype))
    return HttpRequest("POST" if body else "GET", target, headers=h, body=body, peer_ip="192.0.2.1")


def crs_findings(r: HttpRequest, c: CnafControls) -> list[tuple[str, str]]:
    """The CRS stage alone (the CNAF's own detectors would report most of these first)."""
    rs = crs.ruleset()
    assert rs is not None
    found = _crs_findings(rs, r, extract(r), c, r.path, set())
    return [(f.attack, f.reason.split(":")[0]) for f in found]


def test_reader_folds_chains_and_reads_actions(rule_dir: Path) -> None:
    sec = parse_file(rule_dir / "REQUEST-942-APPLICATION-ATTACK-SQLI.conf")
    union = next(r for r in sec if r.rule_id == 942901)
    assert union.paranoia_level == 1 and union.severity == "CRITICAL" and union.msg == "Union select"
    assert union.links[0].transforms == ["urlDecodeUni", "lowercase"]
    excluded = [t for t in union.links[0].targets if t.exclude]
    assert excluded and excluded[0].collection == "REQUEST_COOKIES" and excluded[0].key_is_regex
    rce = parse_file(rule_dir / "REQUEST-932-APPLICATION-ATTACK-RCE.conf")
    assert (
        len(rce) == 1 and len(rce[0].links) == 2 and rce[0].links[1].targets[0].collection == "MATCHED_VARS"
    )


def test_load_stats_count_what_is_skipped(rules: CrsRuleSet) -> None:
    ids = {r.rule_id for r in rules.rules}
    assert {942901, 942902, 942903, 942904, 942905, 932901, 930901, 930902} <= ids
    assert 942906 not in ids and 949110 not in ids  # TX target; 949 is CRS's own scoring
    assert rules.stats.skipped.get("targets") == 1
    assert rules.stats.hyperscan == HYPERSCAN_AVAILABLE


def test_paranoia_level_and_threshold_decide(installed: CrsRuleSet) -> None:
    r = req("/s?q=1%20UNION%20ALL%20SELECT%20password%20FROM%20users")
    assert ("sqli", "OWASP CRS 942901") in crs_findings(r, controls(1))
    weak = req("/s?q=tea%20or%20coffee%3Dfine")  # 942903 (3) + 942904 (2): only at PL2
    assert crs_findings(weak, controls(1)) == []
    assert [a for a, _ in crs_findings(weak, controls(2))] == ["sqli"]
    assert crs_findings(weak, controls(2, threshold=10)) == []
    assert crs_findings(weak, controls(2, disabled=[942904])) == []


def test_args_get_is_only_the_query(installed: CrsRuleSet) -> None:
    assert ("sqli", "OWASP CRS 942905") in crs_findings(req("/s?q=a%0Ab"), controls(1))
    form = req("/s", body=b"q=a%0Ab", ctype="application/x-www-form-urlencoded")
    assert ("sqli", "OWASP CRS 942905") not in crs_findings(form, controls(1))


def test_phrase_list_transform_and_chain(installed: CrsRuleSet) -> None:
    c = controls(1)
    assert ("cmdi", "OWASP CRS 932901") in crs_findings(req("/r?x=c%5Ca%27t%20/etc/hosts"), c)  # c\a't → cat
    assert crs_findings(req("/r?x=cat%20food"), c) == []  # the chain wants a '/'
    assert ("cmdi", "OWASP CRS 932901") in crs_findings(req("/r", [("Cookie", "s=wget /x")]), c)
    assert cmd_line('C^a"t ,/etc;  x') == "cat/etc x"


def test_targets_exclusions_and_request_parts(installed: CrsRuleSet) -> None:
    c = controls(1)
    assert crs_findings(req("/", [("Referer", "https://a.example/x/../y")]), c) == []
    assert ("lfi", "OWASP CRS 930901") in crs_findings(req("/", [("X-Path", "../../etc")]), c)
    assert ("lfi", "OWASP CRS 930902") in crs_findings(req("/app/.git/config"), c)
    # cookie names and query parameter names are variables too
    assert ("sqli", "OWASP CRS 942901") in crs_findings(req("/", [("Cookie", "union+select+1=2")]), c)
    assert ("sqli", "OWASP CRS 942901") in crs_findings(req("/?union%20select%201=2"), c)
    # __utm cookies are excluded by the rule itself
    assert crs_findings(req("/", [("Cookie", "__utmz=union select 1")]), c) == []


def test_xml_body_text_and_attributes_not_markup(installed: CrsRuleSet) -> None:
    c = controls(1)
    doc = b'<?xml version="1.0"?><q a="x"><w>1 union select 2</w></q>'
    assert ("sqli", "OWASP CRS 942901") in crs_findings(req("/x", body=doc, ctype="application/xml"), c)
    benign = b'<?xml version="1.0" encoding="UTF-8"?><order id="7"><item sku="A-1">Coffee</item></order>'
    assert inspect(req("/x", body=benign, ctype="application/xml"), c) == []


def test_python_fallback_matches_hyperscan(rule_dir: Path, rules: CrsRuleSet) -> None:
    slow = CrsRuleSet(rule_dir, use_hyperscan=False)
    for coll, value in [
        ("ARGS_GET", "1 union all select 2"),
        ("ARGS_GET", "tea or coffee=fine"),
        ("ARGS_POST", "c\\at /etc/passwd"),
        ("REQUEST_HEADERS", "../../x"),
        ("ARGS_GET", "nothing here"),
    ]:
        assert {r.rule_id for r in slow.match(coll, "k", value)} == {
            r.rule_id for r in rules.match(coll, "k", value)
        }


@pytest.mark.skipif(not HYPERSCAN_AVAILABLE, reason="hyperscan wheel not installed")
def test_compiled_database_is_cached(rule_dir: Path, rules: CrsRuleSet) -> None:
    import os

    cache = Path(os.environ["GARRISON_CNAF_CACHE"])
    assert list(cache.glob("hs-*.db")) and list(cache.glob("hs-*.json"))
    again = CrsRuleSet(rule_dir)
    assert {r.rule_id for r in again.match("ARGS_GET", "q", "1 union select 2")} >= {942901}


def test_missing_rule_set_degrades_with_a_start_up_message(tmp_path: Path) -> None:
    code = (
        "from garrison.cnaf import crs\n"
        "from garrison.cnaf.engine import inspect\n"
        "from garrison.cnaf.request import HttpRequest\n"
        "from garrison.policy.cnaf import CnafControls\n"
        "assert crs.ruleset() is None\n"
        "r = HttpRequest('GET', '/?q=%3Cscript%3Ealert(1)%3C/script%3E', headers=[('Host', 'a')])\n"
        "print([f.attack for f in inspect(r, CnafControls())])\n"
    )
    env = {"GARRISON_CNAF_CRS_RULES": str(tmp_path / "absent"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "OWASP CRS rules not found" in out.stderr and "modsecurity-crs" in out.stderr
    assert out.stdout.strip() == "['xss']"  # own detectors still run


def test_proxy_start_up_names_the_rule_set(tmp_path: Path, rule_dir: Path) -> None:
    policy = tmp_path / "p.json"
    policy.write_text("{}")
    env = {
        "GARRISON_CNAF_CRS_RULES": str(rule_dir),
        "GARRISON_CNAF_CACHE": str(tmp_path / "c"),
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "garrison",
            "cnaf",
            "inspect",
            "/?x=c%5Ca%27t%20/tmp/x",
            "--policy",
            str(policy),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "OWASP CRS from" in out.stderr and "rules in 3 files" in out.stderr
    assert out.returncode == 1 and "932901" in out.stdout


def test_excepted_or_disabled_class_adds_nothing_to_the_score(installed: CrsRuleSet) -> None:
    from garrison.policy.cnaf import CnafException

    weak = req("/docs/p?q=tea%20or%20coffee%3Dfine")
    c = controls(2)
    assert [a for a, _ in crs_findings(weak, c)] == ["sqli"]
    c.exceptions = [CnafException(path="/docs/*", param="q", attack="sqli")]
    assert crs_findings(weak, c) == []
    off = controls(2)
    off.effects["sqli"] = "disable"
    assert crs_findings(weak, off) == []


def test_prose_counts_only_level_one_rules(installed: CrsRuleSet) -> None:
    prose = "Customers asked whether tea or coffee tastes better in the morning and the answer was fine"
    body = ("q=" + prose.replace(" ", "+") + "%3D").encode()
    r = req("/feedback", body=body, ctype="application/x-www-form-urlencoded")
    assert crs_findings(r, controls(2)) == []  # 942903 + 942904 are level 2: not on prose
    short = req("/s", body=b"q=tea+or+coffee%3Dfine", ctype="application/x-www-form-urlencoded")
    assert [a for a, _ in crs_findings(short, controls(2))] == ["sqli"]


def test_cached_result_is_not_reused_once_the_rule_set_is_loaded(rules: CrsRuleSet) -> None:
    """A request decided while CRS was still loading (own detectors only) is decided again when the
    rule set is there: the detection cache is keyed by the rule set too."""
    from garrison.cnaf.firewall import Firewall

    c = controls(1)
    fw = Firewall(lambda: c, lambda _ev: None)
    r = req("/r?page=2", [("Cookie", "s=wget /x")])  # CRS 932901 only; the own cmdi detector passes it
    try:
        crs.set_ruleset(None)
        assert fw.check(r).status is None
        crs.set_ruleset(rules)
        assert fw.check(r).status == 403
        assert fw.check(req("/r?page=3", [("Cookie", "s=wget /x")])).status == 403
    finally:
        crs.set_ruleset(None)
        crs._loaded = crs._UNSET
