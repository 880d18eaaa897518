"""A Garden-like cell built from real parts: runc containers with an overlay root (a busybox rootfs
image as the lower layer), the host's cgroup layout under `garden/<id>`, their own network namespace,
the droplet streamed into the container before the app process starts, and the app process run in
the container with the CF environment Garden gives it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BUSYBOX = "/bin/busybox"
TOOLS = ("sh", "cat", "ls", "sleep", "echo", "cp", "chmod", "seq", "true", "wget", "nc", "id")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the cell defender and runc need root"
    if shutil.which("runc") is None:
        return "runc not installed (Debian package runc)"
    if not Path(BUSYBOX).exists():
        return "busybox-static not installed"
    return None


@dataclass
class GardenContainer:
    id: str
    runc_root: Path
    bundle: Path
    rootfs: Path
    env: list[str]

    def run_app(self, script: str) -> None:
        """Garden's `run` of the app: a process with the CF environment, detached."""
        subprocess.run(["runc", "--root", str(self.runc_root), "exec", "-d", *self._env(), self.id,
                        "/bin/sh", "-c", script], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)

    def exec(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A command inside the container, as the app would start it (same environment)."""
        return subprocess.run(["runc", "--root", str(self.runc_root), "exec", *self._env(), self.id, *argv],
                              capture_output=True, text=True, timeout=timeout)

    def stream_in(self, rel: str, data: bytes, mode: int = 0o755) -> None:
        """What Garden's StreamIn does with the droplet: files written into the container's root."""
        path = self.rootfs / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)

    def _env(self) -> list[str]:
        return [a for e in self.env for a in ("--env", e)]

    def delete(self) -> None:
        subprocess.run(["runc", "--root", str(self.runc_root), "delete", "-f", self.id], capture_output=True,
                       timeout=30)
        subprocess.run(["umount", "-l", str(self.rootfs)], capture_output=True)


@pytest.fixture(scope="session")
def rootfs_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The read-only image layer: busybox applets as separate files (so a deny of one is not a deny
    of all), the directories a CF rootfs has."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("rootfs-image")
    (root / "bin").mkdir()
    for tool in TOOLS:
        shutil.copy2(BUSYBOX, root / "bin" / tool)
    for d in ("proc", "sys", "dev", "tmp", "etc", "home/vcap/app", "usr/bin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nvcap:x:2000:2000::/home/vcap:/bin/sh\n")
    return root


@pytest.fixture
def runc_root(tmp_path: Path) -> Path:
    path = tmp_path / "runc-root"
    path.mkdir()
    return path


@pytest.fixture
def garden(rootfs_image: Path, runc_root: Path, tmp_path: Path) -> Iterator[Callable[..., GardenContainer]]:
    made: list[GardenContainer] = []

    def create(app: str = "shop", org: str = "acme", space: str = "prod", index: int = 0) -> GardenContainer:
        cid = uuid.uuid4().hex[:12]
        base = tmp_path / cid
        bundle, upper, work = base / "bundle", base / "upper", base / "work"
        rootfs = bundle / "rootfs"
        for d in (rootfs, upper, work):
            d.mkdir(parents=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={rootfs_image},upperdir={upper},workdir={work}", str(rootfs)], check=True)
        subprocess.run(["runc", "spec"], cwd=bundle, check=True)
        config = json.loads((bundle / "config.json").read_text())
        config["process"]["terminal"] = False
        config["process"]["args"] = ["/bin/sleep", "3600"]  # Garden's init: no CF environment
        config["root"]["readonly"] = False
        config["linux"]["cgroupsPath"] = f"garden/{cid}"
        config["hostname"] = cid
        (bundle / "config.json").write_text(json.dumps(config))
        # the container keeps the stdio it is given: a pipe would never reach EOF
        with open(base / "runc.log", "wb") as log:
            subprocess.run(["runc", "--root", str(runc_root), "run", "-d", cid], cwd=bundle, check=True,
                           stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=60)
        vcap = {"application_id": f"{app}-guid", "application_name": app, "space_name": space,
                "organization_name": org, "instance_index": index}
        env = [f"VCAP_APPLICATION={json.dumps(vcap)}", f"CF_INSTANCE_INDEX={index}", "HOME=/home/vcap",
               "PATH=/bin:/usr/bin"]
        c = GardenContainer(cid, runc_root, bundle, rootfs, env)
        made.append(c)
        return c

    yield create
    for c in made:
        c.delete()
