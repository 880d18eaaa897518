"""How fast the console hears about a cell's containers: runc containers (busybox rootfs on overlay)
started and stopped next to a cell defender enrolled with a real console (SQLite), timed from the
event on the cell to the console's API showing it:

- container created → workload listed;  app started (CF env) → workload has its app identity and rule;
- policy PUT → every running workload reports the new rule (the push re-applied);
- container deleted → workload marked stopped.

Goal: ≤ 1 s for appearing and disappearing. Medians and maxima over the containers; load average printed.

    .venv/bin/python bench/cell_console.py [--containers 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from garrison.cell.console import CellConsoleLink
from garrison.cell.defender import CellDefender
from garrison.channel.bundle import decode_bundle
from garrison.policy.audit import AuditEvent
from tests.fixtures.console import RunningConsole

TOOLS = ("sh", "sleep")


def image(base: Path) -> Path:
    img = base / "image"
    for d in ("bin", "proc", "dev", "tmp", "sys"):
        (img / d).mkdir(parents=True, exist_ok=True)
    for t in TOOLS:
        shutil.copy2("/bin/busybox", img / "bin" / t)
    return img


def create(base: Path, img: Path, runc_root: Path) -> tuple[str, Path]:
    cid = uuid.uuid4().hex[:12]
    d = base / cid
    upper, work, rootfs = d / "upper", d / "work", d / "bundle" / "rootfs"
    for x in (upper, work, rootfs):
        x.mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={img},upperdir={upper},workdir={work}",
                    str(rootfs)], check=True)  # fmt: skip
    subprocess.run(["runc", "spec"], cwd=rootfs.parent, check=True)
    cfg = json.loads((rootfs.parent / "config.json").read_text())
    cfg["process"].update(terminal=False, args=["/bin/sleep", "3600"])
    cfg["linux"]["cgroupsPath"] = f"garden/{cid}"
    (rootfs.parent / "config.json").write_text(json.dumps(cfg))
    subprocess.run(["runc", "--root", str(runc_root), "run", "-d", cid], cwd=rootfs.parent, check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return cid, rootfs


def run_app(runc_root: Path, cid: str, app: str, index: int) -> None:
    vcap = {"application_id": f"{app}-guid", "application_name": app, "space_name": "prod",
            "organization_name": "acme", "instance_index": index}  # fmt: skip
    subprocess.run(["runc", "--root", str(runc_root), "exec", "-d", "--env", f"VCAP_APPLICATION={json.dumps(vcap)}",
                    "--env", f"CF_INSTANCE_INDEX={index}", cid, "/bin/sleep", "3600"], check=True)  # fmt: skip


def until(pred: Callable[[], bool], timeout: float = 30.0) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("not reached")
        time.sleep(0.01)
    return time.monotonic()


def stats(name: str, xs: list[float]) -> None:
    ms = [x * 1000 for x in xs]
    print(f"{name:<42} median {statistics.median(ms):7.0f} ms   max {max(ms):7.0f} ms   (n={len(ms)})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=20)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    base = Path(tempfile.mkdtemp(prefix="garrison-bench-cell-"))
    runc_root = base / "runc"
    runc_root.mkdir()
    console = RunningConsole(base / "console").start()
    made: list[tuple[str, Path]] = []
    try:
        console.put_policy({"rules": [{"name": "rule-1", "scope": {"orgs": ["acme"]}}]})
        with console.api() as api:
            bundle = api.get("/defenders/install-bundle/cell").json()["bundle"]
        link = CellConsoleLink(decode_bundle(bundle), base / "cell-data")
        policy, how = link.first_policy(30)
        print(how)
        events: list[AuditEvent] = []
        defender = CellDefender(policy, lambda e: (events.append(e), link.emit(e)), roots=[str(runc_root)])
        link.attach(defender)
        defender.start()
        did = link.client.defender_id
        img = image(base)
        api = console.api()

        def rows() -> dict[str, dict[str, Any]]:
            return {w["container_id"]: w for w in api.get(f"/defenders/{did}/workloads").json()}

        appear, identity, gone = [], [], []
        for i in range(args.containers):
            t0 = time.monotonic()
            cid, rootfs = create(base, img, runc_root)
            made.append((cid, rootfs))
            appear.append(until(lambda cid=cid: cid in rows()) - t0)
            t0 = time.monotonic()
            run_app(runc_root, cid, f"app{i % 5}", i)
            identity.append(until(lambda cid=cid: rows().get(cid, {}).get("app_name", "") != "") - t0)
        t0 = time.monotonic()
        console.put_policy({"rules": [{"name": "rule-2", "scope": {"orgs": ["acme"]}}]})
        push = until(lambda: all(w["rule"] == "rule-2" for w in rows().values() if not w["gone_at"])) - t0
        deleting = []
        for cid, _ in made:
            t0 = time.monotonic()
            subprocess.run(["runc", "--root", str(runc_root), "delete", "-f", cid], check=True)
            t1 = time.monotonic()
            deleting.append(t1 - t0)
            gone.append(until(lambda cid=cid: bool(rows().get(cid, {}).get("gone_at"))) - t1)
        print(f"containers: {args.containers}; discovery every 200 ms; API polled every 10 ms")
        stats("container created → listed in the console", appear)
        stats("app started → identity and rule in console", identity)
        stats("`runc delete -f` itself (kill + cleanup)", deleting)
        stats("container deleted → stopped in the console", gone)
        print(f"{'policy PUT → all workloads on the new rule':<42} {push * 1000:7.0f} ms")
        api.close()
        defender.stop()
        link.stop()
    finally:
        for cid, rootfs in made:
            subprocess.run(["runc", "--root", str(runc_root), "delete", "-f", cid], capture_output=True)
            subprocess.run(["umount", "-l", str(rootfs)], capture_output=True)
        console.stop()
        shutil.rmtree(base, ignore_errors=True)
        print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
