"""Replay the labelled CNAF corpora through the detection engine in-process.

Prints, per attack class, the detection rate (attack payloads reported *as that class*, and as any
class) and, for the benign corpus, the false-positive rate with the classes that fired.

    .venv/bin/python bench/cnaf_eval.py [--show-misses] [--show-fps]

Two corpora: `attacks/benign` (the development set the detectors were tuned on) and
`holdout_attacks/holdout_benign` (written afterwards and never tuned on; its figures are the honest ones).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import quote, quote_plus

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from garrison.cnaf.engine import inspect
from garrison.cnaf.request import HttpRequest
from garrison.policy.cnaf import ATTACK_CLASSES, CnafControls

CORPUS = Path(__file__).resolve().parent / "corpus" / "cnaf"


def _evade(value: str, how: str) -> str:
    if how == "double":
        return quote(value, safe="")
    if how == "entity":
        return "".join(f"&#x{ord(c):x};" if c in "<>\"'=()" else c for c in value)
    if how == "unicode":
        return "".join(f"%u{ord(c):04x}" if c in "<>'\"=()" else c for c in value)
    return value


def build(item: dict[str, str]) -> HttpRequest:
    """The request a client would send to deliver `value` at `where`."""
    how = item.get("encode", "")
    value = _evade(item["value"], how)
    enc = (lambda v: v) if how == "none" else (lambda v: quote_plus(v, safe="%"))
    name = item.get("name", "")
    where = item["where"]
    headers = [("Host", "app.example.com"), ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0")]
    target, body = "/app", b""
    if where == "query":
        target = f"/app?{name}={enc(value)}&page=1"
    elif where == "path":
        target = quote(value, safe="/;%")
    elif where == "form":
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        body = f"{quote_plus(name)}={enc(value)}&submit=Save".encode()
    elif where == "json":
        headers.append(("Content-Type", "application/json"))
        body = json.dumps({name: value, "id": 7}).encode()
    elif where == "header":
        headers = [(k, v) for k, v in headers if k.lower() != name.lower()] + [(name, value)]
    elif where == "cookie":
        headers.append(("Cookie", f"lang=en; {name}={value}"))
    elif where == "multipart-filename":
        b = "----garrisonboundary"
        headers.append(("Content-Type", f"multipart/form-data; boundary={b}"))
        body = (
            f'--{b}\r\nContent-Disposition: form-data; name="{name}"; filename="{value}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n\x89PNG...\r\n--{b}--\r\n"
        ).encode()
    else:
        raise SystemExit(f"unknown location {where!r} in corpus")
    method = "POST" if body else "GET"
    if body:
        headers.append(("Content-Length", str(len(body))))
    return HttpRequest(method=method, target=target, headers=headers, body=body, peer_ip="192.0.2.1")


def load(name: str) -> list[dict[str, str]]:
    with (CORPUS / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--show-misses", action="store_true")
    ap.add_argument("--show-fps", action="store_true")
    ap.add_argument("--vulndb", type=Path, default=Path("/work/shared/vulndb"), help="advisory prose set")
    ap.add_argument("--vulndb-limit", type=int, default=50_000)
    args = ap.parse_args()
    for title, prefix in (("development set", ""), ("held-out set", "holdout_")):
        report(title, load(f"{prefix}attacks.jsonl"), load(f"{prefix}benign.jsonl"), args)
        print()
    if args.vulndb.is_dir():
        prose_report(args.vulndb, args.vulndb_limit, args.show_fps)
    return 0


def advisory_texts(root: Path, limit: int) -> list[str]:
    """Summaries and details of real advisories (OSV JSON/YAML): prose *about* attacks."""
    import yaml

    texts: list[str] = []
    for path in sorted(root.rglob("*")):
        if len(texts) >= limit:
            break
        if path.suffix not in (".json", ".yaml", ".yml"):
            continue
        try:
            doc = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
        except (ValueError, yaml.YAMLError, OSError):
            continue
        if isinstance(doc, dict):
            for key in ("summary", "details", "title", "description"):
                v = doc.get(key)
                if isinstance(v, str) and v.strip():
                    texts.append(v)
    return texts[:limit]


def prose_report(root: Path, limit: int, show: bool) -> None:
    """A hard benign set: advisory text posted as JSON (think: a security tracker). Many advisories
    quote real payloads (`<script>`, `../../`), so part of this rate is correct detection."""
    texts = advisory_texts(root, limit)
    if not texts:
        return
    controls = CnafControls()
    by_class: Counter[str] = Counter()
    flagged = 0
    examples: list[str] = []
    for text in texts:
        body = json.dumps({"details": text}).encode()
        r = HttpRequest(
            method="POST",
            target="/advisories",
            headers=[("Host", "tracker.example.com"), ("Content-Type", "application/json")],
            body=body,
            peer_ip="192.0.2.1",
        )
        found = inspect(r, controls)
        if found:
            flagged += 1
            for f in found:
                by_class[f.attack] += 1
            if len(examples) < 15:
                examples.append(f"  {[f.attack for f in found]} {found[0].value[:90]!r}")
    print(
        f"Advisory prose ({root}): {len(texts)} texts posted as JSON, {100.0 * flagged / len(texts):.1f}% flagged"
    )
    print("  by class: " + ", ".join(f"{k} {100.0 * v / len(texts):.1f}%" for k, v in by_class.most_common()))
    if show:
        print(*examples, sep="\n")


def report(
    title: str, attacks: list[dict[str, str]], benign: list[dict[str, str]], args: argparse.Namespace
) -> None:
    controls = CnafControls()  # every class on ('alert')
    total: Counter[str] = Counter()
    exact: Counter[str] = Counter()
    anyhit: Counter[str] = Counter()
    misses: list[str] = []
    for item in attacks:
        cls = item["class"]
        found = {f.attack for f in inspect(build(item), controls)}
        total[cls] += 1
        exact[cls] += cls in found
        anyhit[cls] += bool(found)
        if cls not in found:
            misses.append(f"  {cls:15s} {item['where']:8s} {item['value'][:70]!r} → {sorted(found) or '-'}")
    fp_by_class: Counter[str] = Counter()
    fps: list[str] = []
    benign_fp = 0
    for item in benign:
        fired = inspect(build(item), controls)
        if fired:
            benign_fp += 1
            for f in fired:
                fp_by_class[f.attack] += 1
            fps.append(
                f"  {item['where']:8s} {item['value'][:60]!r} → {[(f.attack, f.reason) for f in fired]}"
            )
    print(f"CNAF {title}: {len(attacks)} attack and {len(benign)} benign requests (bench/corpus/cnaf)")
    print(f"{'class':16s} {'payloads':>8s} {'detected':>9s} {'as class':>9s} {'benign FPs':>11s}")
    rows: defaultdict[str, list[int]] = defaultdict(list)
    for cls in ATTACK_CLASSES:
        if cls == "protocol":
            continue
        n = total[cls]
        rows[cls] = [n, anyhit[cls], exact[cls]]
        rate = 100.0 * exact[cls] / n if n else 0.0
        rate_any = 100.0 * anyhit[cls] / n if n else 0.0
        fp_rate = 100.0 * fp_by_class[cls] / len(benign)
        print(f"{cls:16s} {n:8d} {rate_any:8.1f}% {rate:8.1f}% {fp_rate:10.1f}%")
    n_all = sum(total.values())
    print(
        f"{'all':16s} {n_all:8d} {100.0 * sum(anyhit.values()) / n_all:8.1f}% "
        f"{100.0 * sum(exact.values()) / n_all:8.1f}% {100.0 * benign_fp / len(benign):10.1f}%"
    )
    print("(protocol violations are exercised on real sockets in tests/cnaf/test_proxy.py)")
    if args.show_misses and misses:
        print("misses:", *misses, sep="\n")
    if args.show_fps and fps:
        print("false positives:", *fps, sep="\n")


if __name__ == "__main__":
    raise SystemExit(main())
