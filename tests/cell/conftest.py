"""A Garden-like cell built from real parts: runc containers with an overlay root (a busybox rootfs
image as the lower layer), the host's cgroup layout under `garden/<id>`, their own network namespace,
the droplet streamed into the container before the app process starts, and the app process run in
the container with the CF environment Garden gives it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from garrison.cell.defender import CellDefender
from garrison.channel.credentials import load_credentials
from garrison.policy.audit import AuditEvent
from garrison.policy.model import RuntimePolicy
from tests.polling import until

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = "/bin/busybox"
START_SH = "while true; do sleep 1; done"
MAXIMUS = 4294967294  # Garden maps container root here
GARDEN_ID_MAP = [{"containerID": 0, "hostID": MAXIMUS, "size": 1},
                 {"containerID": 1, "hostID": 1, "size": MAXIMUS - 1}]
LOADER = "/lib64/ld-linux-x86-64.so.2"
DYNAMIC = {LOADER.lstrip("/"): LOADER, "lib/x86_64-linux-gnu/libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6",
           "bin/dyn-true": "/usr/bin/true"}
TOOLS = ("sh", "cat", "ls", "sleep", "echo", "cp", "chmod", "seq", "true", "wget", "nc", "id", "nslookup")


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
        for p in (path, *path.relative_to(self.rootfs).parents):  # as the container's root wrote them
            os.lchown(self.rootfs / p, MAXIMUS, MAXIMUS)

    def veth(self, n: int) -> tuple[str, str]:
        """A veth pair from the cell into the container's network namespace, as Garden wires it:
        (cell side address, container address), a /30 of the suite's own 10.200.n.0."""
        pid = json.loads(subprocess.run(["runc", "--root", str(self.runc_root), "state", self.id],
                                        capture_output=True, text=True, check=True).stdout)["pid"]
        host_if, cont_if = f"gh{self.id[:8]}", f"gc{self.id[:8]}"
        host_ip, cont_ip = f"10.200.{n}.1", f"10.200.{n}.2"
        for cmd in (
            ["ip", "link", "add", host_if, "type", "veth", "peer", "name", cont_if],
            ["ip", "link", "set", cont_if, "netns", str(pid)],
            ["ip", "addr", "add", f"{host_ip}/30", "dev", host_if],
            ["ip", "link", "set", host_if, "up"],
            ["nsenter", "-t", str(pid), "-n", "ip", "addr", "add", f"{cont_ip}/30", "dev", cont_if],
            ["nsenter", "-t", str(pid), "-n", "ip", "link", "set", cont_if, "up"],
            ["nsenter", "-t", str(pid), "-n", "ip", "link", "set", "lo", "up"],
        ):
            subprocess.run(cmd, check=True, capture_output=True, timeout=30)
        self.host_if = host_if
        return host_ip, cont_ip

    def _env(self) -> list[str]:
        return [a for e in self.env for a in ("--env", e)]

    host_if: str | None = None

    def delete(self) -> None:
        if self.host_if:
            subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
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
    for rel, src in DYNAMIC.items():  # a dynamic loader, libc and a dynamically linked program
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.realpath(src), root / rel)
        (root / rel).chmod(0o755)
    for path in [root, *root.rglob("*")]:  # owned by container root, as grootfs lays out an image
        os.lchown(path, MAXIMUS, MAXIMUS)
    return root


@pytest.fixture
def runc_root(tmp_path: Path) -> Path:
    path = tmp_path / "runc-root"
    path.mkdir()
    return path


@pytest.fixture
def garden(rootfs_image: Path, runc_root: Path, tmp_path: Path) -> Iterator[Callable[..., GardenContainer]]:
    made: list[GardenContainer] = []
    cells = Path(tempfile.mkdtemp(prefix="garrison-cell-"))
    cells.chmod(0o711)

    def create(app: str = "shop", org: str = "acme", space: str = "prod", index: int = 0, *,
               privileged: bool = False, host_pid: bool = False) -> GardenContainer:
        """Unprivileged as Garden makes it (a user namespace mapping container root to the cell's
        4294967294, everything else 1:1), or `privileged` (no user namespace)."""
        cid = uuid.uuid4().hex[:12]
        base = cells / cid  # a container's root in a user namespace must be reachable by its root
        bundle, upper, work = base / "bundle", base / "upper", base / "work"
        rootfs = bundle / "rootfs"
        for d in (rootfs, upper, work):
            d.mkdir(parents=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={rootfs_image},upperdir={upper},workdir={work}", str(rootfs)], check=True)
        subprocess.run(["runc", "spec"], cwd=bundle, check=True)
        config = json.loads((bundle / "config.json").read_text())
        config["process"]["terminal"] = False
        # Garden's init: no CF environment; reaps the orphans reparented to it, as garden-init does
        config["process"]["args"] = ["/bin/sh", "-c", START_SH]
        config["root"]["readonly"] = False
        config["linux"]["cgroupsPath"] = f"garden/{cid}"
        if not privileged:
            config["linux"]["namespaces"].append({"type": "user"})
            config["linux"]["uidMappings"] = GARDEN_ID_MAP
            config["linux"]["gidMappings"] = GARDEN_ID_MAP
            for m in config["mounts"]:  # sysfs cannot be mounted from a user namespace without a netns owner
                if m["type"] == "sysfs":
                    m.update(type="bind", source="/sys", options=["rbind", "nosuid", "noexec", "nodev", "ro"])
                if m["destination"] == "/sys/fs/cgroup":
                    m["options"] = [o for o in m["options"] if o != "relatime"]
        if host_pid:
            config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != "pid"]
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
    shutil.rmtree(cells, ignore_errors=True)


class Audits:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.defender: CellDefender | None = None

    def __call__(self, ev: AuditEvent) -> None:
        self.events.append(ev)

    def wait(self, pred: Callable[[AuditEvent], bool], timeout: float = 10.0) -> AuditEvent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in list(self.events):
                if pred(ev):
                    return ev
            time.sleep(0.05)
        raise AssertionError(f"no such audit; got {[(e.type, e.control, e.message) for e in self.events]}")


@pytest.fixture
def defender(runc_root: Path) -> Iterator[Callable[[RuntimePolicy], tuple[CellDefender, Audits]]]:
    started: list[CellDefender] = []

    def start(policy: RuntimePolicy, **kw: Any) -> tuple[CellDefender, Audits]:
        audits = Audits()
        d = CellDefender(policy, audits, roots=[str(runc_root)], **kw)
        audits.defender = d
        d.start()
        started.append(d)
        return d, audits

    yield start
    for d in started:
        d.stop()


def started_app(garden: Callable[..., GardenContainer], audits: Audits, droplet: dict[str, bytes] | None = None,
                **kw: Any) -> GardenContainer:
    c = garden(**kw)
    c.stream_in("/home/vcap/app/bin/true", Path("/bin/busybox").read_bytes())  # part of the droplet
    for rel, data in (droplet or {}).items():
        c.stream_in(rel, data)
    time.sleep(0.1)  # Garden streams the droplet in well before it runs the app
    c.run_app(START_SH)
    audits.wait(lambda e: e.control == "cell.container_protected" and e.extra["container"] == c.id)
    return c




class CellProcess:
    def __init__(self, console: Any, runc_root: Path, data: Path) -> None:
        with console.api() as api:
            r = api.get("/defenders/install-bundle/cell")
            r.raise_for_status()
            self.bundle = r.json()["bundle"]
        self.console, self.runc_root, self.data = console, runc_root, data
        self.log = data.parent / f"{data.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> CellProcess:
        env = {**os.environ, "INSTALL_BUNDLE": self.bundle, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "garrison", "defender", "cell", "--runc-root", str(self.runc_root),
                 "--data-folder", str(self.data), "--connect-timeout", "30", *args],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        until(lambda: (creds := load_credentials(self.data)) and creds.defender_id, what="enrolment")
        return self

    @property
    def defender_id(self) -> str:
        creds = load_credentials(self.data)
        assert creds is not None
        return creds.defender_id

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.proc = None




@pytest.fixture
def cell(console: Any, runc_root: Path, tmp_path: Path) -> Iterator[CellProcess]:
    """The cell defender CLI, enrolled from the console's cell bundle (start it with `.start()`)."""
    c = CellProcess(console, runc_root, tmp_path / "cell-data")
    yield c
    c.stop()
