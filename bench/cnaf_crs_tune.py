"""Measure which CRS rules the CNAF should skip by default (`garrison/cnaf/crs/tuning.py`).

    .venv/bin/python bench/cnaf_crs_tune.py TESTS_DIR [--margin 0.02] [--fp-goal 0.5]

Runs in-process on the *development* part of the CRS regression tests (bench/cnaf_crs.py's split;
the held-out quarter is never read) plus Garrison's own development corpora (bench/corpus/cnaf,
not the held-out files). For every request it records whether the CNAF's own detectors fire and
which CRS rules fire (no exclusions), then removes rules greedily — always the one that avoids
the most false positives (own benign corpus weighted x10) per detected attack lost — while every
attack class stays at or above ModSecurity + CRS paranoia level 2 plus a margin and no own-corpus
attack is lost. ModSecurity's per-class figures come from a `bench/cnaf_crs.py --json` run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from cnaf_crs import BLOCKED, load_cases, parse_request
from cnaf_eval import build, load

from garrison.cnaf import crs, engine
from garrison.cnaf.decode import decode_path
from garrison.cnaf.request import HttpRequest
from garrison.policy.cnaf import ATTACK_CLASSES, CnafControls

CLASSES = ("930", "931", "932", "933", "934", "941", "942", "943", "944")


def profile(req: HttpRequest | None, rules: crs.CrsRuleSet) -> tuple[bool, dict[int, int]]:
    """(own detectors fire, {CRS rule id: score} with no exclusions) for one request."""
    if req is None:
        return True, {}
    on = CnafControls(effects=dict.fromkeys(ATTACK_CLASSES, "prevent"))
    own = CnafControls(effects=dict.fromkeys(ATTACK_CLASSES, "prevent"), crs={"enabled": False})
    own_hit = bool(engine.inspect(req, own))
    fields, plain = engine.request_fields(req, crs_on=True)
    rules.skip(frozenset())
    hits = engine.crs_hits(rules, req, fields, on, decode_path(req.path), frozenset(), plain_target=plain)
    return own_hit, {rid: rule.score for rid, (rule, _) in hits.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tests", type=Path)
    ap.add_argument("--modsec-json", type=Path, required=True, help="bench/cnaf_crs.py --json output")
    ap.add_argument("--margin", type=float, default=0.02, help="per-class detection kept above PL2")
    ap.add_argument("--fp-goal", type=float, default=0.45, help="stop at this share of CRS PL1's FP rate")
    ap.add_argument("--from-default", action="store_true", help="start from the current default exclusions")
    args = ap.parse_args()
    rules = crs.ruleset()
    if rules is None:
        raise SystemExit(crs.status())
    modsec = json.loads(args.modsec_json.read_text())
    cases = load_cases(args.tests)
    assert len(cases) == len(modsec), "the --json run must cover the same tests (split all)"
    rows = []  # (kind, class, weight, own, hits)
    pl2: Counter[str] = Counter()
    total: Counter[str] = Counter()
    benign_pl1 = benign_n = 0
    for case, ms in zip(cases, modsec, strict=True):
        if case.holdout or case.cls not in CLASSES:
            continue
        own, hits = profile(parse_request(case.raw), rules)
        if case.attack:
            rows.append(("attack", case.cls, 1, own, hits))
            total[case.cls] += 1
            pl2[case.cls] += ms["modsec2"] in BLOCKED
        else:
            rows.append(("benign", case.cls, 1, own, hits))
            benign_n += 1
            benign_pl1 += ms["modsec1"] in BLOCKED
    for item in load("benign.jsonl"):
        own, hits = profile(build(item), rules)
        rows.append(("benign", "own", 10, own, hits))
    for item in load("attacks.jsonl"):
        own, hits = profile(build(item), rules)
        rows.append(("attack", "own", 1, own, hits))
    floor = {c: pl2[c] + max(1, round(args.margin * total[c])) for c in total}
    goal = args.fp_goal * benign_pl1 / benign_n

    def blocked(row: tuple, excluded: set[int]) -> bool:
        return row[3] or sum(s for r, s in row[4].items() if r not in excluded) >= 5

    own_fp = Counter(r[1] for r in rows if r[0] == "benign" and r[3])
    print(f"own detectors alone fire on {own_fp} benign requests", file=sys.stderr)
    excluded: set[int] = set(crs.DEFAULT_EXCLUDED_RULES) if args.from_default else set()
    while True:
        state = [blocked(r, excluded) for r in rows]
        det = Counter(r[1] for r, b in zip(rows, state, strict=True) if b and r[0] == "attack")
        fp = sum(b for r, b in zip(rows, state, strict=True) if r[0] == "benign" and r[1] != "own") / benign_n
        own_fp = sum(b for r, b in zip(rows, state, strict=True) if r[0] == "benign" and r[1] == "own")
        print(
            f"excluded {len(excluded):3d}: CRS benign {100 * fp:.1f} % (goal {100 * goal:.1f}), own benign {own_fp}, "
            + ", ".join(f"{c} {det[c]}/{floor.get(c, 0)}" for c in CLASSES),
            file=sys.stderr,
        )
        if fp <= goal and own_fp == 0:
            break
        best, best_val = None, 0.0
        candidates = {
            rid
            for r, b in zip(rows, state, strict=True)
            if b and r[0] == "benign" and not r[3]
            for rid in r[4]
        }
        for rid in candidates - excluded:
            trial = excluded | {rid}
            gain = lost = 0
            lost_by: Counter[str] = Counter()
            partial = 0.0
            for r, b in zip(rows, state, strict=True):
                if b and rid in r[4]:
                    if blocked(r, trial):  # a step towards passing (it needs another rule gone too)
                        partial += 0.3 * r[2] * (r[0] == "benign" and not r[3])
                    elif r[0] == "benign":
                        gain += r[2]
                    else:
                        lost += 1
                        lost_by[r[1]] += 1
            gain += partial
            if gain == 0 or lost_by["own"]:
                continue
            if any(det[c] - lost_by[c] < floor[c] for c in lost_by if c in floor):
                continue
            val = gain / (1 + lost)
            if val > best_val:
                best, best_val = rid, val
        if best is None:
            break
        excluded.add(best)
    print(sorted(excluded))
    left = Counter()
    for r in rows:
        if r[0] == "benign" and blocked(r, excluded):
            left[
                ("own" if r[3] else "") + r[1] + " " + ",".join(str(k) for k in sorted(set(r[4]) - excluded))
            ] += 1
    for k, n in left.most_common():
        print(n, k, file=sys.stderr)


if __name__ == "__main__":
    main()
