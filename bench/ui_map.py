"""Network discovery map render time at 200 apps / 2,000 edges (issue 17), in Debian's Chromium.

A real console (SQLite) gets the estate as `profile` reports over its defender channel, one
enrolled defender per app (tests/ui/discovery_data.py: apps over 4 orgs x 5 spaces calling other apps
by address, DNS names and external hosts). Then, in interleaved rounds, a signed-in page opens
/discovery and the bench reads:

- `api`: GET /api/v1/discovery/map as the page asks for it (server time, measured from Python);
- `open`: navigation start to the map drawn and the next frame painted (what a user waits for);
- `draw`: the page's own layout + SVG build time (`#map[data-render-ms]`), grouped (the default
  above 60 apps: one node per org/space) and expanded (every app, "Expand all");
- `hover`: a pointer move onto the busiest node (its edges highlighted, the rest faded) to the next
  frame painted, dispatched in the page.

Prints medians and ranges with the load average; no asserts (figures only mean something on a quiet
machine).

    .venv/bin/python bench/ui_map.py [--apps 200] [--edges 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.channel_common import load_note
from tests.fixtures.console import RunningConsole
from tests.ui.conftest import ARGS, CHROMIUM
from tests.ui.discovery_data import estate, send_reports

NEXT_FRAME = (
    "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(performance.now()))))"
)


def fmt(xs: list[float]) -> str:
    return f"median {statistics.median(xs):8.1f} ms   (min {min(xs):.1f}, max {max(xs):.1f}, n={len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--apps", type=int, default=200)
    ap.add_argument("--edges", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is not installed (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="garrison-bench-map-") as d:
        console = RunningConsole(Path(d) / "console").start()
        try:
            apps = estate(args.apps, args.edges, time.time() - 3600)
            took = send_reports(console, apps)
            with console.api() as c:
                t = time.perf_counter()
                data = c.get("/discovery/map", params={"limit": 5000}).json()
                first_api = (time.perf_counter() - t) * 1000
            n_apps = sum(1 for n in data["nodes"] if n["kind"] == "app")
            print(f"estate: {n_apps} apps, {len(data['nodes'])} nodes, {len(data['edges'])} edges"
                  f" (sent as {len(apps)} defenders' reports in {took:.1f} s)")  # fmt: skip
            print(f"first map API call {first_api:.0f} ms")
            results: dict[str, list[float]] = {
                k: [] for k in ("api", "open", "draw grouped", "draw expanded", "hover")
            }
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
                ctx = browser.new_context(base_url=console.url, ignore_https_errors=True,
                                          viewport={"width": 1600, "height": 1000})  # fmt: skip
                page = ctx.new_page()
                page.goto("/login")
                page.fill("#username", console.admin_user)
                page.fill("#password", console.admin_password)
                page.click("button[type=submit]")
                page.wait_for_url("**/dashboard")
                for _ in range(args.rounds):
                    with console.api() as c:  # interleaved with the page rounds, same load
                        t = time.perf_counter()
                        c.get("/discovery/map", params={"limit": 5000}).raise_for_status()
                        results["api"].append((time.perf_counter() - t) * 1000)
                    page.goto("/discovery")
                    page.wait_for_function("() => Number(document.querySelector('#map').dataset.renders || 0) >= 1",
                                           timeout=120_000)  # fmt: skip
                    painted = page.evaluate(NEXT_FRAME)
                    results["open"].append(painted)  # performance.now() counts from navigation start
                    results["draw grouped"].append(float(page.get_attribute("#map", "data-render-ms") or 0))
                    page.click("#map-expand")
                    page.wait_for_function(
                        "() => Number(document.querySelector('#map').dataset.renders) >= 2"
                    )
                    results["draw expanded"].append(float(page.get_attribute("#map", "data-render-ms") or 0))
                    busiest = page.evaluate(
                        """() => { let best = null, n = -1;
                                   for (const g of document.querySelectorAll('#map .node')) {
                                     const k = document.querySelectorAll(`#map path.edge[data-src="${g.dataset.v}"]`).length;
                                     if (k > n) { n = k; best = g.dataset.v; } }
                                   return best; }"""
                    )
                    # the pointer event dispatched in the page: the page's own work to the next frame
                    # (Playwright's hover adds its round trips and actionability checks)
                    hover = page.evaluate(
                        """async (vid) => {
                             const t = document.querySelector(`#map .node[data-v="${vid}"] text`);
                             const r = t.getBoundingClientRect();
                             const t0 = performance.now();
                             t.dispatchEvent(new PointerEvent("pointermove", {bubbles: true,
                               clientX: r.x + r.width / 2, clientY: r.y + r.height / 2}));
                             await new Promise(ok => requestAnimationFrame(() => requestAnimationFrame(ok)));
                             const ms = performance.now() - t0;
                             if (!document.querySelector("#map").classList.contains("focusing")) throw new Error("no hover");
                             return ms; }""",
                        busiest,
                    )
                    results["hover"].append(hover)
                stats = page.evaluate("() => document.querySelector('#map-stats').textContent")
                shots = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
                shots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shots / "bench-map-expanded.png"))
                page.click("#map-collapse")
                page.screenshot(path=str(shots / "bench-map-grouped.png"))
                browser.close()
        finally:
            console.stop()
    print(f"page: {stats}")
    for k, xs in results.items():
        print(f"{k:14s} {fmt(xs)}")
    print(load_note())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
