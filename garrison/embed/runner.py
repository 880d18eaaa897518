"""Running a droplet locally the way a Diego cell does, for tests and demos (`garrison run-droplet`).

Layout and order follow CF's launcher: the droplet is extracted into a root that plays /home/vcap,
HOME is root/app and is the working directory, ../profile.d/* then .profile.d/* then .profile are
sourced by bash, and the start command is run with `exec bash -c`. The environment is built from
scratch (as in a container), not inherited, so a droplet that works here does not rely on the
caller's shell.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from garrison.embed.droplet import read_staging_info
from garrison.embed.safetar import Limits, safe_extract

# Written for Garrison; mirrors the documented behaviour of CF's buildpack app lifecycle launcher.
LAUNCHER = r"""
cd "$1" || exit 70
for env_file in ../profile.d/* .profile.d/*; do
  if [ -f "$env_file" ]; then source "$env_file"; fi
done
if [ -f .profile ]; then source .profile; fi
shift
exec bash -c "$1"
"""

CF_PATH = "/usr/local/bin:/usr/bin:/bin"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


@dataclass
class RunSpec:
    """What CF would know about the app instance: identity, limits, port, extra env."""

    name: str = "app"
    org: str = "local-org"
    space: str = "local-space"
    instance_index: int = 0
    port: int = 8080
    memory_mb: int = 512
    disk_mb: int = 1024
    command: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    """run the app as this user (CF runs apps as the unprivileged `vcap`); needs root"""

    def guid(self, kind: str) -> str:
        """Stable ids per (org, space, name) so a re-run looks like the same app to the console."""
        return str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"garrison-local:{kind}:{self.org}/{self.space}/{self.name}")
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cf_environment(spec: RunSpec, root: Path) -> dict[str, str]:
    """The variables Diego sets for an app instance (the subset apps and buildpacks rely on)."""
    app_guid = spec.guid("app")
    instance_guid = str(uuid.uuid5(uuid.UUID(app_guid), str(spec.instance_index)))
    uris = [f"{spec.name}.localhost"]
    vcap_application = {
        "application_id": app_guid,
        "application_name": spec.name,
        "application_uris": uris,
        "application_version": spec.guid("version"),
        "cf_api": "http://localhost",
        "host": "0.0.0.0",
        "instance_id": instance_guid,
        "instance_index": spec.instance_index,
        "limits": {"disk": spec.disk_mb, "fds": 16384, "mem": spec.memory_mb},
        "name": spec.name,
        "organization_id": spec.guid("org"),
        "organization_name": spec.org,
        "process_id": app_guid,
        "process_type": "web",
        "space_id": spec.guid("space"),
        "space_name": spec.space,
        "uris": uris,
        "version": spec.guid("version"),
    }
    port = str(spec.port)
    env = {
        "HOME": str(root / "app"),
        "USER": "vcap",
        "PATH": CF_PATH,
        "LANG": "en_US.UTF-8",
        "TMPDIR": str(root / "tmp"),
        "DEPS_DIR": str(root / "deps"),
        "PORT": port,
        "MEMORY_LIMIT": f"{spec.memory_mb}m",
        "VCAP_APPLICATION": json.dumps(vcap_application),
        "VCAP_SERVICES": "{}",
        "VCAP_APP_HOST": "0.0.0.0",
        "VCAP_APP_PORT": port,
        "INSTANCE_INDEX": str(spec.instance_index),
        "INSTANCE_GUID": instance_guid,
        "CF_INSTANCE_INDEX": str(spec.instance_index),
        "CF_INSTANCE_GUID": instance_guid,
        "CF_INSTANCE_IP": "127.0.0.1",
        "CF_INSTANCE_INTERNAL_IP": "127.0.0.1",
        "CF_INSTANCE_PORT": port,
        "CF_INSTANCE_ADDR": f"127.0.0.1:{port}",
        "CF_INSTANCE_PORTS": json.dumps([{"external": spec.port, "internal": spec.port}]),
    }
    env.update(spec.env)
    return env


def prepare(droplet: Path, root: Path, limits: Limits | None = None) -> str:
    """Extract the droplet into root (refusing hostile archives); return its staged start command."""
    info = read_staging_info(droplet, limits)
    safe_extract(droplet, root, limits)
    for d in ("app", "tmp", "logs", "deps", "profile.d"):
        (root / d).mkdir(exist_ok=True)
    return info.start_command


def hand_over(root: Path, user: str) -> tuple[int, int]:
    """chown the extracted droplet to `user` (as a cell's droplet belongs to vcap); (uid, gid)."""
    try:
        pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    except KeyError:
        raise ValueError(f"no such user: {user}") from None
    if os.getuid() != 0:
        raise ValueError("--user needs root (the runner hands the droplet over to that user)")
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [*dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, n), pw.pw_uid, pw.pw_gid)
    os.chown(root, pw.pw_uid, pw.pw_gid)
    return pw.pw_uid, pw.pw_gid


def launch(
    root: Path, command: str, env: Mapping[str, str], ids: tuple[int, int] | None = None
) -> subprocess.Popen[bytes]:
    """Start the launcher: bash sources the profile scripts, then execs `bash -c command`."""
    return subprocess.Popen(
        ["/bin/bash", "-c", LAUNCHER, "launcher", str(root / "app"), command],
        env=dict(env),
        cwd=root / "app",
        user=ids[0] if ids else None,
        group=ids[1] if ids else None,
        extra_groups=[] if ids else None,
    )


def launcher_env(root: Path) -> dict[str, str]:
    """A droplet that carries the launcher defender (not the standalone build) runs here with this
    machine's Garrison: the launcher uses GARRISON_DEFENDER_PYTHON when that interpreter has it."""
    from garrison.embed.standalone import LAUNCHER_MARK

    for candidate in (root / "app" / ".garrison" / "defender", root / "app" / "defender"):
        try:
            head = candidate.read_bytes()[:4096]
        except OSError:
            continue
        if LAUNCHER_MARK in head:
            print(
                f"run-droplet: {candidate.relative_to(root)} is the LAUNCHER defender; running it with this "
                f"machine's Garrison ({sys.executable}). On Cloud Foundry it needs the garrison package "
                "in the droplet: embed the standalone defender for cf push.",
                file=sys.stderr,
            )
            return {"GARRISON_DEFENDER_PYTHON": sys.executable}
    return {}


def private_tmp(env: dict[str, str], root: Path) -> None:
    """A Diego container has its own /tmp; here a DATA_FOLDER under /tmp (the manifest's usual value)
    would be shared with every other local run (and find another console's defender identity there),
    so it is moved into the droplet's own tmp/."""
    data = env.get("DATA_FOLDER", "")
    if data == "/tmp" or data.startswith("/tmp/"):
        env["DATA_FOLDER"] = str(root / "tmp" / data.removeprefix("/tmp").lstrip("/"))
        print(
            f"run-droplet: DATA_FOLDER {data} -> {env['DATA_FOLDER']} (a container's /tmp is its own)",
            file=sys.stderr,
        )


def run(droplet: Path, spec: RunSpec, *, workdir: Path | None = None, keep: bool = False) -> int:
    """Extract, launch and wait, forwarding signals; returns the app's exit status like a shell does."""
    root = workdir or Path(tempfile.mkdtemp(prefix="garrison-droplet-"))
    try:
        staged = prepare(droplet, root)
        command = spec.command or staged
        if not command:
            raise ValueError("the droplet has no start_command and none was given (--command)")
        ids = hand_over(root, spec.user) if spec.user else None
        env = {**cf_environment(spec, root), **launcher_env(root)}
        private_tmp(env, root)
        proc = launch(root, command, env, ids)

        def forward(signum: int, _frame: FrameType | None) -> None:
            proc.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in FORWARDED}
        try:
            rc = proc.wait()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        return 128 - rc if rc < 0 else rc
    finally:
        if workdir is None and not keep:
            shutil.rmtree(root, ignore_errors=True)
