"""The detectors' pre-filters change no result: the Hyperscan gate in front of their big regexes
(detect/prefilter.py) and the SQL tokenizer's trigger check (sqli.may_fingerprint) are compared with
the detectors running without them, on the labelled corpora, browser-shaped values and texts where
Python's `re` and Hyperscan read characters differently."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from garrison.cnaf import engine
from garrison.cnaf.detect import prefilter, sqli
from garrison.cnaf.fields import Field

CORPUS = Path(__file__).resolve().parents[2] / "bench" / "corpus" / "cnaf"


def _corpus_values() -> list[str]:
    values: list[str] = []
    for path in sorted(CORPUS.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                values.append(json.loads(line)["value"])
    return values


def _browser_values(rnd: random.Random) -> list[str]:
    words = [
        "select",
        "from",
        "items",
        "union",
        "etc",
        "passwd",
        "bin",
        "sh",
        "script",
        "alert",
        "onload",
        "window",
        "exec",
        "curl",
        "id",
        "cat",
        "php",
        "jndi",
        "ldap",
        "x",
        "1",
        "2024",
        "a@b.c",
    ]
    seps = [
        "/",
        "?",
        "&",
        "=",
        ".",
        "-",
        "_",
        "~",
        ":",
        "%",
        "+",
        ";",
        "'",
        '"',
        "(",
        ")",
        "<",
        ">",
        "|",
        "$",
        "{",
        "}",
        "`",
        "#",
        " ",
        "*",
        "\\",
        "!",
        "@",
        ",",
    ]
    out = []
    for i in range(1500):
        parts = [rnd.choice(words if j % 2 == 0 else seps) for j in range(rnd.randint(1, 14))]
        out.append("".join(parts))
        out.append(f"https://shop.example/items/{i}?from={rnd.choice(words)}&tab={rnd.choice(words)}")
    return out


def _values() -> list[str]:
    rnd = random.Random(12)
    base = _corpus_values() + _browser_values(rnd)
    variants = []
    for v in base[:400]:
        variants += [v.upper(), f"https://x.example/?a={v}", v + "\x1c", v.replace("s", "\u017f"), "é" + v]
    return base + variants


FIELDS = [
    Field("query", "q", ""),
    Field("query", "file", ""),
    Field("query_name", "q", ""),
    Field("header", "Referer", ""),
    Field("header", "User-Agent", ""),
    Field("cookie", "sid", ""),
    Field("path", "", ""),
    Field("filename", "upload", ""),
]


@pytest.fixture(scope="module")
def gate() -> Iterator[prefilter.PrefilterGate]:
    engine.start_prefilter(background=False)
    assert prefilter.GATE.active
    yield prefilter.GATE


def _results(values: list[str]) -> list[str | None]:
    return [fn(v, Field(f.location, f.name, v)) for v in values for f in FIELDS for _, fn in engine.DETECTORS]


def test_gate_changes_no_detector_result(
    gate: prefilter.PrefilterGate, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = _values()
    gated = _results(values)
    assert any(gated), "the corpus has attacks"
    monkeypatch.setattr(gate, "_db", None)  # every pattern runs in `re` as written
    assert _results(values) == gated


def test_gate_wraps_the_big_patterns_only_where_both_engines_agree() -> None:
    g = prefilter.PrefilterGate()
    big = "|".join(f"word{i}" for i in range(30))
    patterns = {
        "lookbehind": re.compile(r"(?<=[a-z])`(?:id|ls)`|" + big, re.I),
        "end": re.compile(r"(?:passwd|shadow)\Z|\s+-c\b|" + big),
        "multiline": re.compile(r"^;\s*(?:cat|ls)$|" + big, re.M),
    }
    wrapped = {k: g.wrap(rx) for k, rx in patterns.items()}
    assert g.wrap(re.compile(r"a{,3}|" + big)).__class__ is re.Pattern  # `{,3}`: PCRE reads a literal
    assert g.wrap(re.compile(r"(\w)\1|" + big)).__class__ is re.Pattern  # back-reference
    assert g.wrap(re.compile(r"short")).__class__ is re.Pattern
    assert g.wrap(re.compile(big), "_QUICK").__class__ is re.Pattern
    g.build()
    assert g.active
    texts = [
        "x`id`",
        "X`ID`",
        " `id`",
        "etc/passwd",
        "etc/passwd\n",
        "sh\x1c-c",
        "sh -c",
        "sh\x0b-c",
        "a\n; cat\nb",
        "; cat",
        "\u017fh -c",
        "word7",
        "WORD29",
        "nothing here",
        "",
        "é word3",
    ]
    for name, rx in patterns.items():
        for t in texts:
            for method in ("search", "match", "fullmatch", "findall"):
                assert getattr(wrapped[name], method)(t) == getattr(rx, method)(t) or (
                    method != "findall"
                    and getattr(wrapped[name], method)(t).span() == getattr(rx, method)(t).span()
                ), (name, t, method)
            assert wrapped[name].sub("*", t) == rx.sub("*", t)


# Fingerprint tokens none of which is a trigger (see sqli._TRIGGER_MARKS): q, U, E, X, O, & and s
# (only a quote makes one) are left out; `;` and comments (c, C) count only after a leading number.
_QUIET_TOKENS = "nvbkFfWoa(),."
_QUIET_UNLESS_LEADING_NUMBER = _QUIET_TOKENS + ";cC"


def _fingerprints(alphabet: str, first: str, rnd: random.Random) -> Iterator[str]:
    """Every fingerprint up to 4 tokens, then random ones up to 12, whose first token is in `first`."""
    for length in range(1, 5):
        for fp in itertools.product(alphabet, repeat=length):
            if fp[0] in first:
                yield "".join(fp)
    for _ in range(30000):
        yield rnd.choice(first) + "".join(rnd.choice(alphabet) for _ in range(rnd.randint(4, 11)))


def test_sqli_patterns_need_a_trigger_token() -> None:
    rnd = random.Random(3)
    for fp in _fingerprints(_QUIET_TOKENS, _QUIET_TOKENS, rnd):
        assert not sqli._PATTERNS.search(fp), fp
    not_number = _QUIET_UNLESS_LEADING_NUMBER.replace("n", "")
    for fp in _fingerprints(_QUIET_UNLESS_LEADING_NUMBER, not_number, rnd):
        assert not sqli._PATTERNS.search(fp), fp
    assert all(re.fullmatch(r"[a-z_]+", w) for w in sqli.TRIGGER_WORDS)


def test_sqli_trigger_check_is_exact_on_the_corpora() -> None:
    for v in _values():
        if not sqli.may_fingerprint(v):
            assert not any(sqli._PATTERNS.search(fp) for fp in sqli.fingerprints(v)), v
    assert not sqli.may_fingerprint("https://shop.example/items/7?from=search&tab=reviews")
    assert sqli.may_fingerprint("1/*!50000UNION*/")
    assert sqli.may_fingerprint("1 pg_sleep(5)") and sqli.may_fingerprint("a&&b")
    assert sqli.may_fingerprint(" 1;2") and sqli.may_fingerprint("/**/1#") and sqli.may_fingerprint(".5--")
    assert not sqli.may_fingerprint("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
