"""Verdict identity check for CNAF speed work: every verdict (status, classes, fields, reasons) of
`Firewall.check`, in-process, on the CRS regression corpus plus random browser-like requests, under
three policies, each request twice (forwards, then backwards: memos warm), written as JSON.

    .venv/bin/python bench/cnaf_verdicts.py OUT.json [--crs-tests DIR] [--prefilter on|off] [--compare OLD.json]

A speed change must leave OUT.json byte-identical to the one written before it (`--compare`, or
`cmp`); run it from a `git worktree` of the old commit for the "before" file. `--prefilter off`
keeps the detectors' Hyperscan prefilter unbuilt and the SQL tokenizer's trigger check off (the
detectors run as written), so two runs of one tree show that the pre-filters change nothing. DIR is a local checkout of CRS's
`tests/regression/tests` (nothing is fetched); without it only the random requests are checked.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from garrison.cnaf import crs, engine
from garrison.cnaf.detect import sqli
from garrison.cnaf.firewall import Firewall
from garrison.cnaf.request import HttpRequest
from garrison.policy.cnaf import ATTACK_CLASSES, CnafControls

_WORDS = ["select", "or", "and", "union", "from", "etc", "passwd", "bash", "script", "alert", "O'Reilly", "a@b.c",
          "x", "1", "<b>", "../", ";id", "$(id)", "`id`", "--", "'", "\"", "=", "&", "%27", "%3Cscript%3E",
          "javascript:", "http://evil.example/x"]  # fmt: skip
_AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "() { :; }; /bin/bash -c id",
    "sqlmap/1.5",
    "curl/8.0",
    "Mozilla/5.0 (Windows NT 10.0) <script>alert(1)</script>",
    "nikto",
]


def _referers(i: int, rnd: random.Random) -> list[str]:
    return [
        f"https://shop.example/items/{i % 30}?from=search",
        "http://evil.example/?" + rnd.choice(_WORDS),
        "https://shop.example/" + rnd.choice(_WORDS),
    ]


def browser_like(count: int, seed: int = 7) -> list[HttpRequest]:
    """Random requests mixing benign and hostile values in the query, cookies and headers."""
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        pairs = (
            f"{rnd.choice(_WORDS)}={rnd.choice(_WORDS)}{rnd.choice(_WORDS)}" for _ in range(rnd.randint(0, 3))
        )
        query = "&".join(pairs)
        headers = [
            ("Host", rnd.choice(["shop.example", "evil.example", "127.0.0.1"])),
            ("User-Agent", rnd.choice(_AGENTS)),
            ("Accept", rnd.choice(["text/html,*/*;q=0.8", "*/*", "' or 1=1--"])),
            ("Cookie", f"sid={rnd.choice(_WORDS)}{i % 50}; theme={rnd.choice(_WORDS)}"),
            ("Referer", rnd.choice(_referers(i, rnd))),
        ]
        rnd.shuffle(headers)
        target = "/api/items" + ("?" + query if query else "")
        out.append(HttpRequest("GET", target, headers=headers[: rnd.randint(1, 5)], peer_ip="192.0.2.1"))
    return out


def corpus_requests(tests_dir: Path) -> list[HttpRequest]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cnaf_crs import load_cases, parse_request

    return [r for c in load_cases(tests_dir) if (r := parse_request(c.raw)) is not None]


POLICIES = [
    CnafControls(effects=dict.fromkeys(ATTACK_CLASSES, "prevent")),
    CnafControls(effects=dict.fromkeys(ATTACK_CLASSES, "prevent"), crs={"paranoia_level": 2}),
    CnafControls(
        effects={**dict.fromkeys(ATTACK_CLASSES, "prevent"), "sqli": "disable"}, crs={"paranoia_level": 3}
    ),
]


def verdicts(requests: list[HttpRequest]) -> list[list[object]]:
    """Every policy blocks with `prevent` (no bans), so one request never decides the next."""
    out: list[list[object]] = []
    for index, controls in enumerate(POLICIES):
        fw = Firewall(lambda c=controls: c, lambda _e: None)
        for req in requests + requests[::-1]:
            v = fw.check(req)
            events = [(e.control, e.extra.get("field"), e.extra.get("reason")) for e in v.events]
            out.append([index, v.status, events])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--crs-tests", type=Path, default=Path("/work/crs/tests/regression/tests"))
    ap.add_argument("--random", type=int, default=4000, help="random browser-like requests")
    ap.add_argument("--prefilter", choices=["on", "off"], default="on")
    ap.add_argument("--compare", type=Path, help="a verdict file of an earlier run: exit 1 if they differ")
    args = ap.parse_args()
    crs.ruleset()
    if args.prefilter == "on":
        engine.start_prefilter(background=False)
    else:
        sqli.may_fingerprint = lambda _value: True  # every value tokenised, as without the check
    requests = corpus_requests(args.crs_tests) if args.crs_tests.is_dir() else []
    requests += browser_like(args.random)
    result = verdicts(requests)
    text = json.dumps(result)
    args.out.write_text(text)
    blocked = sum(1 for r in result if r[1])
    print(
        f"{len(result)} verdicts ({len(requests)} requests x 2 x {len(POLICIES)} policies), {blocked} blocked"
    )
    if args.compare is not None:
        old, new = json.loads(args.compare.read_text()), json.loads(text)
        differ = [i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b]
        if differ or len(old) != len(new):
            print(
                f"DIFFERENT: {len(differ)} verdicts differ (first at {differ[:5]}), {len(old)} vs {len(result)}"
            )
            return 1
        print(f"identical to {args.compare}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
