"""A Garden-like runc container for the cell benchmarks: a busybox image as the overlay's lower layer
(owned by the container's root), a user namespace mapping container root to 4294967294 as Garden
does, its own pid/mount/network namespaces, an init without CF environment, cgroups `garden/<id>`."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

MAXIMUS = 4294967294
ID_MAP = [{"containerID": 0, "hostID": MAXIMUS, "size": 1}, {"containerID": 1, "hostID": 1, "size": MAXIMUS - 1}]
TOOLS = ("sh", "true", "sleep", "wget", "cp", "nc")
INIT_SH = "while true; do sleep 1; done"


def make_image(base: Path) -> Path:
    image = base / "image"
    for d in ("bin", "proc", "dev", "tmp", "sys", "home/vcap/app"):
        (image / d).mkdir(parents=True, exist_ok=True)
    for t in TOOLS:
        shutil.copy2("/bin/busybox", image / "bin" / t)
    (image / "tmp").chmod(0o1777)
    for path in [image, *image.rglob("*")]:
        os.lchown(path, MAXIMUS, MAXIMUS)
    return image


def make_container(base: Path, image: Path, runc_root: Path, cid: str) -> Path:
    """Create and start container `cid`; returns its root filesystem (an overlay mount)."""
    top = base / cid
    upper, work, bundle = top / "upper", top / "work", top / "bundle"
    for d in (upper, work, bundle / "rootfs"):
        d.mkdir(parents=True, exist_ok=True)
    rootfs = bundle / "rootfs"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={image},upperdir={upper},workdir={work}",
                    str(rootfs)], check=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["/bin/sh", "-c", INIT_SH]
    cfg["root"]["readonly"] = False
    cfg["linux"]["cgroupsPath"] = f"garden/{cid}"
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = cfg["linux"]["gidMappings"] = ID_MAP
    for m in cfg["mounts"]:  # sysfs cannot be mounted from a user namespace without a netns owner
        if m["type"] == "sysfs":
            m.update(type="bind", source="/sys", options=["rbind", "nosuid", "noexec", "nodev", "ro"])
        if m["destination"] == "/sys/fs/cgroup":
            m["options"] = [o for o in m["options"] if o != "relatime"]
    (bundle / "config.json").write_text(json.dumps(cfg))
    with open(top / "runc.log", "wb") as log:
        # no session keyring: every container's root is the same cell uid (4294967294), whose key quota
        # (kernel.keys.maxkeys 200 / maxbytes 20000 by default) would stop the cell at ~100 containers
        subprocess.run(["runc", "--root", str(runc_root), "run", "--no-new-keyring", "-d", cid], cwd=bundle,
                       check=True, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    return rootfs


def vcap_env(app: str) -> list[str]:
    vcap = json.dumps({"application_id": f"{app}-guid", "application_name": app, "organization_name": "o",
                       "space_name": "s", "instance_index": 0})
    return ["--env", f"VCAP_APPLICATION={vcap}", "--env", "CF_INSTANCE_INDEX=0"]


def run_app(runc_root: Path, cid: str, app: str) -> None:
    """Garden's `run` of the app: a detached process with the CF environment."""
    subprocess.run(["runc", "--root", str(runc_root), "exec", "-d", *vcap_env(app), cid, "/bin/sh", "-c", INIT_SH],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def destroy(base: Path, runc_root: Path, cid: str) -> None:
    subprocess.run(["runc", "--root", str(runc_root), "delete", "-f", cid], capture_output=True)
    subprocess.run(["umount", "-l", str(base / cid / "bundle" / "rootfs")], capture_output=True)


def container_pid(runc_root: Path, cid: str) -> int:
    state = subprocess.run(["runc", "--root", str(runc_root), "state", cid], check=True, capture_output=True,
                           text=True).stdout
    return int(json.loads(state)["pid"])


@contextmanager
def bench_cell(prefix: str, cid: str) -> Iterator[tuple[Path, Path, int]]:
    """One Garden-like container in a temporary cell: (base dir, runc root, init pid); removed on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        base, runc_root = Path(d), Path(d) / "runc-root"
        base.chmod(0o711)
        runc_root.mkdir()
        make_container(base, make_image(base), runc_root, cid)
        try:
            yield base, runc_root, container_pid(runc_root, cid)
        finally:
            destroy(base, runc_root, cid)


def interleaved(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Each variant once per round, in the same order every round; the median per variant."""
    got: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, measure in variants.items():
            got[name].append(measure())
    print("  rounds: " + "; ".join(f"{k} " + " ".join(f"{x:.0f}" for x in v) for k, v in got.items()))
    return {k: statistics.median(v) for k, v in got.items()}


def load() -> str:
    return "load average " + " / ".join(f"{x:.2f}" for x in os.getloadavg())
