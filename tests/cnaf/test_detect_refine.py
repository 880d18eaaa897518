"""Benign-side checks on single CRS rules (garrison/cnaf/crs/refine.py): each check passes the
everyday text its rule over-reads and keeps the attacks the rule exists for."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.cnaf import crs
from garrison.cnaf.crs.refine import BENIGN_SIDE
from garrison.cnaf.crs.ruleset import CrsRuleSet
from garrison.cnaf.engine import inspect
from garrison.cnaf.request import HttpRequest
from garrison.policy.cnaf import ATTACK_CLASSES, CnafControls


def benign(rule: int, value: str, prose: bool = False) -> bool:
    return BENIGN_SIDE[rule](value, prose)


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        (921110, "get it\n"),  # a verb at a line end is no smuggled request
        (921110, "strace ifconfig\n"),
        (921110, "please put it\r\nback"),
        (942360, "/select-quote"),  # identifiers, file names, CSS classes, labels
        (942360, ".select-gws-banana"),
        (942360, "/load.php"),
        (942360, " Update: after the meeting"),
        (942360, "#delete-button"),
        (942360, '"desc"'),  # a quoted word
        (921151, "Go to store.\nAt the store, shop."),  # a multi-line field sent by script
        (921151, "\nSeriously, noop"),
        (942400, "and 7 oranges"),  # counted things
        (942400, "apples and 7 oranges and 3 pears"),
        (921130, "servers accepting HTTP/2 requests"),  # prose naming a protocol version
        (921130, "Convert the <html> page to PDF"),
        (942360, "blablabla. As evidence from the following blablabla"),  # a sentence, not SELECT … AS … FROM
        (942360, "It works, as shown from the start"),
        (942490, "Schauen Sie sich diese Zahl an: 1'000'000\n"),  # Swiss thousands separators
        (942490, "CHF 12'500.00 or 3'000"),
        (932150, "tar is a dark brown or black bituminous usually odorous viscous liquid"),
        (942431, "Привет, мир! Как дела? Всё хорошо."),  # letters outside ASCII are not SQL punctuation
        (
            942431,
            "\xd0\xb0\xd0\xb1\xd0\xb2\xd0\xb3\xd0\xb4\xd0\xb5\xd1\x91\xd0\xb6\xd0\xb7\xd1\x80",
        ),  # mojibake
        (942460, "日本語のテキスト、とても長い文章です。"),
        (942432, "naïve café"),
    ],
)
def test_benign_side_passes_everyday_text(rule: int, value: str) -> None:
    prose = rule == 932150
    assert benign(rule, value, prose)


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        (921110, "x\r\nGET /admin HTTP/1.1\r\nHost: a"),  # a smuggled request line
        (921110, "a\nPOST /transfer HTTP/1.0\n"),
        (942360, "; select"),  # the keyword as SQL
        (942360, "/CREATE TABLE Persons"),
        (942360, '1234 AS "foobar" FROM tablevar2=whatever'),
        (942360, ") AS orders FROM"),
        (942360, "/select-x from users"),  # glued keyword, but SQL follows
        (942360, "'.load_file('/etc/passwd')"),
        (942360, '"desc" or 1=1'),
        (921151, "test\nnext=more"),  # parameter injection
        (921151, "\r\nMAIL FROM:<a@b.com>"),  # SMTP/IMAP/POP3 command injection
        (921151, "\nRETR 123"),
        (921151, "\na001 EXAMINE INBOX"),
        (921151, "x\nSet-Cookie: sid=1"),
        (921151, "x\n\n<script>"),
        (921151, "@{[system 'id' #c\n]}"),  # code on the next line
        (942400, "5 and 1"),  # a boolean probe
        (942400, "and '5'x"),
        (942400, "5 and 1 union select 1"),
        (942400, "x and 7=7"),
        (921130, "x\r\nHTTP/1.1 200 OK\r\nSet-Cookie: a=b"),  # a split response
        (921130, "%0a<html><script>alert(1)</script>".replace("%0a", "\n")),
        (942490, "1'000' or '1'='1"),  # a grouped number does not hide a quote
        (942490, "1' or 1=1"),
        (932150, "tar -xzf /var/www/exfiltrate.tar.gz /etc"),  # no sentence
        (942431, "'é'; drop table users; --"),  # ASCII punctuation still counts
        (942431, "x" + "\u2019" * 6),  # curly quotes still count (best-fit mapping to ')
        (942431, "' or 1=1 --"),  # ASCII text: the rule decides alone
        (942460, "é'))))--"),
    ],
)
def test_benign_side_keeps_attacks(rule: int, value: str) -> None:
    assert not benign(rule, value, prose=False)


SMUGGLING = r"""
SecRule ARGS "@rx (?:get|post|put|trace)\s+\S*(?:\s+http/\d|[\r\n])" \
    "id:921110,phase:2,block,t:none,t:lowercase,msg:'smuggling',tag:'paranoia-level/1',severity:'CRITICAL'"
"""


def test_engine_applies_the_benign_side_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check sits between the CRS match and the score: the rule still blocks its attack."""
    (tmp_path / "REQUEST-921-PROTOCOL-ATTACK.conf").write_text(SMUGGLING)
    monkeypatch.setenv("GARRISON_CNAF_CACHE", str(tmp_path / "cache"))
    crs.set_ruleset(CrsRuleSet(tmp_path))
    try:
        on = CnafControls(effects=dict.fromkeys(ATTACK_CLASSES, "prevent"), crs={"default_exclusions": False})

        def blocked(body: bytes) -> bool:
            r = HttpRequest(
                "POST",
                "/f",
                headers=[("Host", "a"), ("Content-Type", "application/x-www-form-urlencoded")],
                body=body,
                peer_ip="192.0.2.1",
            )
            return any("921110" in f.reason for f in inspect(r, on))

        assert not blocked(b"var=get+it%0a")
        assert blocked(b"var=x%0d%0aGET+/admin+HTTP/1.1%0d%0aHost:+a")
    finally:
        crs.set_ruleset(None)
        crs._loaded = crs._UNSET
