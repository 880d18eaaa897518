"""Replay the OWASP CRS regression tests (go-ftw YAML) as real HTTP requests through the CNAF and
through ModSecurity v3 + CRS, and print per-class detection and false positives side by side.

    .venv/bin/python bench/cnaf_crs.py TESTS_DIR [--targets cnaf,modsec1,modsec2] [--show-misses CLASS]

TESTS_DIR is a local checkout of CRS's `tests/regression/tests` (nothing is fetched at run time).
A test stage whose expected log names rule ids (`expect_ids`) is an attack of the class of its
file (942 → SQLi …); a stage that only lists `no_expect_ids` is benign. Every fourth test (a stable
hash of file and test id) is held out: report it, never tune on it (`--split dev|holdout|all`).

Targets, each a real server on loopback fed the same raw bytes:
* `cnaf`: `garrison cnaf proxy` (every class `prevent`) in front of bench/cnaf_backend.py.
* `modsecN`: libmodsecurity (the `libmodsecurity` wheel) with the installed CRS
  (`/usr/share/modsecurity-crs`, Debian's 3.3.x) at paranoia level N, anomaly threshold 5,
  behind the small httptools server of bench/cnaf_modsec.py (403 on an intervention).
Blocked = answered 400/403/413/431 (the firewall refused the request).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnaf_modsec import RequestCollector
from cnaf_modsec import serve as serve_modsec
from cnaf_proxy_start import start_proxy

from garrison.cnaf.request import HttpRequest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CLASS_NAMES = {
    "913": "scanners (913)",
    "920": "protocol (920)",
    "921": "protocol attack (921)",
    "922": "multipart (922)",
    "930": "LFI (930)",
    "931": "RFI (931)",
    "932": "RCE / cmd (932)",
    "933": "PHP (933)",
    "934": "generic/Node (934)",
    "941": "XSS (941)",
    "942": "SQLi (942)",
    "943": "session fixation (943)",
    "944": "Java (944)",
}
BLOCKED = {400, 403, 413, 431}
APP_ATTACK_FILES = frozenset({"930", "931", "932", "933", "934", "941", "942", "943", "944"})
PROTOCOL_FILES = frozenset({"920", "921", "922"})


@dataclass
class Case:
    cls: str
    rule: str
    test_id: str
    attack: bool
    raw: bytes
    holdout: bool


def _raw_request(inp: dict[str, Any]) -> bytes:
    if inp.get("encoded_request"):
        return base64.b64decode(inp["encoded_request"])
    if inp.get("raw_request"):
        return str(inp["raw_request"]).encode("latin-1", "replace")
    method = str(inp.get("method", "GET"))
    uri = str(inp.get("uri", "/"))
    version = str(inp.get("version", "HTTP/1.1"))
    headers = {str(k): str(v) for k, v in (inp.get("headers") or {}).items()}
    data = inp.get("data")
    body = b""
    if data is not None:
        body = (data if isinstance(data, str) else "\n".join(map(str, data))).encode("utf-8", "replace")
    lower = {k.lower() for k in headers}
    if inp.get("autocomplete_headers", True):
        if "host" not in lower:
            headers["Host"] = "localhost"
        if body and "content-type" not in lower and method.upper() in ("POST", "PUT", "PATCH"):
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if body and "content-length" not in lower and "transfer-encoding" not in lower:
            headers["Content-Length"] = str(len(body))
        headers["Connection"] = "close"
    head = f"{method} {uri} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("utf-8", "replace") + body


def load_cases(root: Path) -> list[Case]:
    import yaml

    cases: list[Case] = []
    for path in sorted(root.rglob("*.yaml")):
        parent = path.parent.name
        if not parent.startswith("REQUEST-"):
            continue  # response rules are not about requests
        cls = parent.split("-")[1]
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            print(f"skipping {path.name}: {exc}", file=sys.stderr)
            continue
        for test in (doc or {}).get("tests") or []:
            tid = str(test.get("test_id", test.get("test_title", "")))
            for stage in test.get("stages") or []:
                stage = stage.get("stage", stage)
                inp, out = stage.get("input") or {}, stage.get("output") or {}
                log = out.get("log") or {}
                expect = log.get("expect_ids") or ([1] if out.get("log_contains") else [])
                no_expect = log.get("no_expect_ids") or ([1] if out.get("no_log_contains") else [])
                if not expect and not no_expect:
                    continue
                h = hashlib.sha256(f"{path.stem}/{tid}".encode()).digest()[0]
                cases.append(Case(cls, path.stem, tid, bool(expect), _raw_request(inp), h % 4 == 0))
    return cases


def parse_request(raw: bytes) -> HttpRequest | None:
    """One test stage's bytes as the CNAF's request (for in-process replays), or None when llhttp
    refuses them (the proxy answers 400 then, whatever the rules)."""
    import httptools

    p = RequestCollector()
    p.on_message_begin()
    parser = httptools.HttpRequestParser(p)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError:
        return None
    method, version = parser.get_method().decode(), parser.get_http_version()
    return HttpRequest(method, p.url.decode("latin-1"), version, p.headers, bytes(p.body))


# -- the client ---------------------------------------------------------------------------------------


def send(port: int, raw: bytes, timeout: float = 5.0) -> int:
    """Status code of the answer, 0 if the connection failed or closed without one."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(raw)
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_WR)
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return 0
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def _start(cmd: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        raise SystemExit(f"{cmd[:3]} did not start: {line!r}")
    return proc, int(line)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int) -> None:
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port}")


def start_cnaf(tmp: Path, policy_extra: dict[str, Any]) -> tuple[list[subprocess.Popen[str]], int]:
    from garrison.policy.cnaf import ATTACK_CLASSES

    backend, bport = _start([PY, str(ROOT / "bench" / "cnaf_backend.py"), "raw"])
    policy = tmp / "cnaf.json"
    policy.write_text(json.dumps({"effects": dict.fromkeys(ATTACK_CLASSES, "prevent"), **policy_extra}))
    pport = _free_port()
    crs_on = (policy_extra.get("crs") or {}).get("enabled", True)
    proxy = start_proxy(pport, bport, policy, str(tmp / "audit.jsonl"), wait_crs=crs_on)
    _wait(pport)
    return [backend, proxy], pport


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tests", nargs="?", type=Path, help="checkout of CRS tests/regression/tests")
    ap.add_argument("--targets", default="cnaf,modsec1,modsec2")
    ap.add_argument("--split", choices=("dev", "holdout", "all"), default="all")
    ap.add_argument("--crs-rules", type=Path, default=Path("/usr/share/modsecurity-crs/rules"))
    ap.add_argument("--cnaf-policy", default="{}", help="extra CNAF controls as JSON, e.g. '{\"crs\":{...}}'")
    ap.add_argument("--show-misses", default="", help="class number (e.g. 942) or 'benign' to list for cnaf")
    ap.add_argument("--serve-modsec", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="write per-case results here")
    args = ap.parse_args()
    if args.serve_modsec:
        serve_modsec(args.serve_modsec, args.crs_rules)
        return
    if args.tests is None:
        ap.error("TESTS_DIR is required")
    print(f"load average: {os.getloadavg()}")
    cases = load_cases(args.tests)
    if args.split != "all":
        cases = [c for c in cases if c.holdout == (args.split == "holdout")]
    print(
        f"{len(cases)} test stages ({sum(c.attack for c in cases)} attacks, "
        f"{sum(not c.attack for c in cases)} benign), split {args.split}"
    )
    targets = [t for t in args.targets.split(",") if t]
    results: dict[str, list[int]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="cnaf-crs-"))
    for target in targets:
        procs: list[subprocess.Popen[str]] = []
        try:
            if target == "cnaf":
                procs, port = start_cnaf(tmp, json.loads(args.cnaf_policy))
            elif target.startswith("modsec"):
                proc, port = _start(
                    [PY, __file__, "--serve-modsec", target[6:] or "1", "--crs-rules", str(args.crs_rules)]
                )
                procs = [proc]
            else:
                raise SystemExit(f"unknown target {target}")
            t0 = time.monotonic()
            results[target] = [send(port, c.raw) for c in cases]
            print(f"{target}: {len(cases)} requests in {time.monotonic() - t0:.1f} s")
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=60)
    report(cases, targets, results)
    if args.split == "all":  # the same run, development and held-out parts side by side
        for name, held in (("development part", False), ("held-out part", True)):
            keep = [i for i, c in enumerate(cases) if c.holdout == held]
            print(f"\n{name}:")
            report([cases[i] for i in keep], targets, {t: [r[i] for i in keep] for t, r in results.items()})
    if args.show_misses:
        want = args.show_misses
        st = results.get("cnaf", [])
        for c, s in zip(cases, st, strict=False):
            if (want == "benign" and not c.attack and s in BLOCKED) or (
                c.attack and c.cls == want and s not in BLOCKED
            ):
                print(f"--- {c.rule} #{c.test_id} status {s} holdout={c.holdout}")
                print(c.raw[:600].decode("utf-8", "replace"))
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "rule": c.rule,
                        "test": c.test_id,
                        "attack": c.attack,
                        "class": c.cls,
                        "holdout": c.holdout,
                        **{t: results[t][i] for t in targets},
                    }
                    for i, c in enumerate(cases)
                ]
            )
        )


def report(cases: list[Case], targets: list[str], results: dict[str, list[int]]) -> None:
    det: dict[str, Counter[str]] = defaultdict(Counter)
    tot: Counter[str] = Counter()
    for i, c in enumerate(cases):
        key = c.cls if c.attack else "benign"
        tot[key] += 1
        for t in targets:
            if results[t][i] in BLOCKED:
                det[key][t] += 1
    head = "| class | cases | " + " | ".join(targets) + " |"
    print(head)
    print("|" + "---|" * (len(targets) + 2))
    order = sorted(k for k in tot if k != "benign")
    for key in order:
        cells = [f"{100 * det[key][t] / tot[key]:.1f} %" for t in targets]
        print(f"| {CLASS_NAMES.get(key, key)} | {tot[key]} | " + " | ".join(cells) + " |")
    for label, keys in (
        ("all attacks", order),
        ("attacks 930-944", [k for k in order if k in APP_ATTACK_FILES]),
        ("protocol + multipart 920-922", [k for k in order if k in PROTOCOL_FILES]),
    ):
        att = sum(tot[k] for k in keys)
        if att:
            cells = [f"{100 * sum(det[k][t] for k in keys) / att:.1f} %" for t in targets]
            print(f"| **{label}** | {att} | " + " | ".join(cells) + " |")
    if tot["benign"]:
        cells = [f"{100 * det['benign'][t] / tot['benign']:.1f} %" for t in targets]
        print(f"| **benign blocked** | {tot['benign']} | " + " | ".join(cells) + " |")
    for label, files in (("930-944", APP_ATTACK_FILES), ("920-922", PROTOCOL_FILES)):
        benign = [i for i, c in enumerate(cases) if not c.attack and c.cls in files]
        if benign:
            cells = [
                f"{100 * sum(results[t][i] in BLOCKED for i in benign) / len(benign):.1f} %" for t in targets
            ]
            print(f"| **benign blocked, {label}** | {len(benign)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
