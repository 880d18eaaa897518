"""Cloud Foundry staging the way the buildpack lifecycle (`builder`) runs it, for end-to-end tests.

Each buildpack is unpacked from its zip (keeping the file modes the zip records). The lifecycle gives
every buildpack the same `/tmp/app` (build dir), `/tmp/cache`, `/tmp/deps` with one `deps/<idx>` per
buildpack, runs `bin/supply BUILD CACHE DEPS IDX` for every buildpack and then
`bin/finalize BUILD CACHE DEPS IDX PROFILE_DIR` and `bin/release` of the last one, with the staging
environment (VCAP_APPLICATION, VCAP_SERVICES, CF_STACK, MEMORY_LIMIT plus the app's own `cf set-env`
variables). The droplet is then packed as `app/ deps/ profile.d/ staging_info.yml tmp/ logs/`.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CfApp:
    name: str
    guid: str = field(default_factory=lambda: str(uuid.uuid4()))
    space: str = "prod"
    space_guid: str = field(default_factory=lambda: str(uuid.uuid4()))
    org: str = "acme"
    org_guid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def vcap(self, instance: int | None = None) -> str:
        v = {
            "application_id": self.guid,
            "application_name": self.name,
            "name": self.name,
            "application_uris": [f"{self.name}.apps.example.com"],
            "space_id": self.space_guid,
            "space_name": self.space,
            "organization_id": self.org_guid,
            "organization_name": self.org,
            "limits": {"mem": 256, "disk": 1024, "fds": 16384},
        }
        if instance is not None:
            v["instance_index"] = instance
        return json.dumps(v)


@dataclass
class Staged:
    returncode: int
    output: str
    root: Path  # the staging container's /tmp: app/, cache/, deps/, contents/
    droplet: Path | None = None

    @property
    def deps(self) -> Path:
        return self.root / "deps"


def unpack_buildpack(zip_path: Path, dest: Path) -> Path:
    """Unzip like the lifecycle does: file modes from the zip's external attributes."""
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            target = dest / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
            mode = (info.external_attr >> 16) & 0o777
            target.chmod(mode or 0o644)
    return dest


def stage(buildpacks: list[Path], app_src: Path, root: Path, app: CfApp, env: dict[str, str]) -> Staged:
    """Run the buildpacks over a copy of `app_src`; on success pack `root/droplet.tgz`."""
    build, cache, deps, contents = root / "app", root / "cache", root / "deps", root / "contents"
    build.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", f"{app_src}/.", str(build)], check=True)
    cache.mkdir(parents=True, exist_ok=True)
    for i in range(len(buildpacks)):
        (deps / str(i)).mkdir(parents=True, exist_ok=True)
    profile = contents / "profile.d"
    profile.mkdir(parents=True, exist_ok=True)
    full_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(root),
        "TMPDIR": str(root / "tmp"),
        "CF_STACK": "cflinuxfs4",
        "MEMORY_LIMIT": "256m",
        "VCAP_APPLICATION": app.vcap(),
        "VCAP_SERVICES": "{}",
        **env,
    }
    (root / "tmp").mkdir(exist_ok=True)
    log: list[str] = []

    def step(*argv: str) -> int:
        r = subprocess.run(list(argv), capture_output=True, text=True, env=full_env, timeout=600)
        log.append(f"$ {' '.join(Path(argv[0]).parts[-2:])}\n{r.stdout}{r.stderr}")
        return r.returncode

    last = len(buildpacks) - 1
    if step(str(buildpacks[last] / "bin" / "detect"), str(build)) != 0:
        return Staged(222, "\n".join(log), root)
    for i, bp in enumerate(buildpacks):
        if (bp / "bin" / "supply").exists():
            rc = step(str(bp / "bin" / "supply"), str(build), str(cache), str(deps), str(i))
            if rc != 0:
                return Staged(rc, "\n".join(log), root)
    rc = step(
        str(buildpacks[last] / "bin" / "finalize"), str(build), str(cache), str(deps), str(last), str(profile)
    )
    if rc != 0:
        return Staged(rc, "\n".join(log), root)
    staged = Staged(0, "\n".join(log), root)
    staged.droplet = pack_droplet(build, deps, profile, root / "droplet.tgz")
    return staged


def pack_droplet(build: Path, deps: Path, profile: Path, out: Path) -> Path:
    """`tar czf` of the droplet layout Diego unpacks into /home/vcap."""
    with tarfile.open(out, "w:gz") as tf:
        tf.add(build, "./app")
        tf.add(deps, "./deps")
        tf.add(profile, "./profile.d")
        info = yaml_bytes({"detected_buildpack": "", "start_command": "python3 app.py"})
        ti = tarfile.TarInfo("./staging_info.yml")
        ti.size = len(info)
        tf.addfile(ti, io.BytesIO(info))
        for d in ("./tmp", "./logs"):
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            tf.addfile(ti)
    return out


def yaml_bytes(d: dict[str, str]) -> bytes:
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in d.items()).encode()


def unpack_droplet(droplet: Path, home: Path) -> None:
    """Diego's extraction into the container's /home/vcap."""
    with tarfile.open(droplet) as tf:
        tf.extractall(home, filter="data")


def source_profile(home: Path) -> dict[str, str]:
    """The GARRISON_* variables the launcher's sourcing of deps/*/profile.d/*.sh exports."""
    script = 'cd "$1"; for f in deps/*/profile.d/*.sh profile.d/*.sh; do [ -f "$f" ] && . "$f"; done; env -0'
    out = subprocess.run(
        ["bash", "-c", script, "bash", str(home)],
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.decode()
    pairs = [kv.split("=", 1) for kv in out.split("\0") if kv.startswith("GARRISON_") and "=" in kv]
    return {k: v for k, v in pairs}


def python_buildpack(dest: Path, site_packages: dict[str, str]) -> Path:
    """A minimal supply buildpack standing in for python_buildpack: it installs the given files into
    deps/<idx>/python/lib/python3.11/site-packages (what a pip install leaves behind)."""
    (dest / "bin").mkdir(parents=True)
    payload = dest / "payload"
    for rel, text in site_packages.items():
        p = payload / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    scripts = {
        "detect": "#!/usr/bin/env bash\necho python\n",
        "supply": (
            '#!/usr/bin/env bash\nset -euo pipefail\nBP=$(cd "$(dirname "$0")/.." && pwd)\n'
            'site="$3/$4/python/lib/python3.11/site-packages"\nmkdir -p "$site"\n'
            'cp -a "$BP/payload/." "$site/"\n'
            'echo "name: python" > "$3/$4/config.yml"\necho "-----> Installing python packages"\n'
        ),
    }
    for name, text in scripts.items():
        (dest / "bin" / name).write_text(text)
        (dest / "bin" / name).chmod(0o755)
    return dest
