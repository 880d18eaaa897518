"""Run the real defender (unprivileged, optionally under a Garden-like filter) around a real app."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# one user per checkout: suites of two checkouts running at once on one machine must not share a uid
# (RLIMIT_NPROC and the fork guard's RLIMIT watch count every process of the uid)
APP_USER = "garrison-" + __import__("hashlib").sha1(str(REPO).encode()).hexdigest()[:8]


def _app_uid() -> int:
    """The unprivileged user apps run as in the tests: created for the suite (as Cloud Foundry runs
    apps as its own `vcap`), so no other service's processes share its uid (RLIMIT_NPROC counts them).
    Falls back to nobody where users cannot be created."""
    import pwd
    import time

    for _ in range(20):
        try:
            return pwd.getpwnam(APP_USER).pw_uid
        except KeyError:
            pass
        if os.getuid() != 0 or not shutil.which("useradd"):
            return 65534
        # another test run may hold the passwd lock: retry
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", APP_USER],
            capture_output=True,
        )
        time.sleep(0.1)
    return 65534


NOBODY = _app_uid()  # the app user's uid (historical name)
MODES = ("root", "user", "garden")


def _world_executable(path: str) -> bool:
    p = Path(os.path.realpath(path))
    for d in [p, *p.parents]:
        try:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def unpriv_python() -> tuple[str, dict[str, str]]:
    """A Python the unprivileged user can run, with PYTHONPATH reaching the repo and the venv."""
    site = [p for p in sys.path if p.endswith("site-packages")]
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), *site])}
    if _world_executable(sys.executable) and all(_world_executable(s) for s in site):
        return sys.executable, env
    v = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if os.path.exists(v) and _world_executable(v) and all(_world_executable(s) for s in site):
        return v, env
    pytest.skip("no Python interpreter the unprivileged test user can run")


def as_nobody() -> list[str]:
    if os.getuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to drop to an unprivileged user")
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all"]


def as_root() -> list[str]:
    if os.getuid() != 0:
        pytest.skip("the native-root mode needs root")
    return []


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    audits: list[dict[str, Any]] = field(default_factory=list)

    def of(self, type_: str | None = None, control: str | None = None) -> list[dict[str, Any]]:
        return [
            a
            for a in self.audits
            if (type_ is None or a["type"] == type_) and (control is None or a["control"] == control)
        ]


@dataclass
class Sandbox:
    """An app directory and data folder owned by the unprivileged user."""

    root: Path

    @property
    def app(self) -> Path:
        return self.root / "app"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def setup(self) -> Sandbox:
        for d in (self.root, self.app, self.data):
            d.mkdir(exist_ok=True)
            if os.getuid() == 0:
                os.chown(d, NOBODY, NOBODY)
        os.chmod(self.root, 0o755)
        return self

    def write(self, name: str, text: str, mode: int = 0o755) -> Path:
        p = self.app / name
        p.write_text(text)
        os.chmod(p, mode)
        if os.getuid() == 0:
            os.chown(p, NOBODY, NOBODY)
        return p

    def run(
        self,
        policy: dict[str, Any] | None,
        argv: list[str],
        *,
        garden: bool = False,
        env: dict[str, str] | None = None,
        defender_args: list[str] | None = None,
        timeout: float = 60,
        input_: str | None = None,
        mode: str | None = None,
    ) -> Run:
        """`mode`: "root" (the defender and app run as root), "user" (the created unprivileged user),
        "garden" (that user under the Garden-like filter); default: the user, `garden` as given."""
        if mode is not None:
            garden = mode == "garden"
        _, pyenv = unpriv_python()
        args = list(defender_args or [])
        if policy is not None:
            pf = self.root / "policy.json"
            pf.write_text(json.dumps(policy))
            os.chmod(pf, 0o644)
            args += ["--policy", str(pf)]
        cmd = defender_command([*args, *argv], garden=garden, as_root_user=mode == "root")
        full_env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.app),
            "DATA_FOLDER": str(self.data),
            **pyenv,
            # `DEFENDER_DATAPLANE=python pytest tests/defender` runs the whole suite on the Python plane
            **{k: v for k, v in os.environ.items() if k == "DEFENDER_DATAPLANE"},
            **(env or {}),
        }
        audit_log = self.data / "garrison-audit.jsonl"
        if audit_log.exists():
            audit_log.unlink()
        p = subprocess.run(
            cmd, cwd=self.app, env=full_env, capture_output=True, text=True, timeout=timeout, input=input_
        )
        audits = []
        if audit_log.exists():
            audits = [json.loads(line) for line in audit_log.read_text().splitlines() if line.strip()]
        return Run(p.returncode, p.stdout, p.stderr, audits)


def defender_command(args: list[str], *, garden: bool = False, as_root_user: bool = False) -> list[str]:
    """argv that starts `garrison defender app-embedded -q <args>` as the test's user (or root),
    under the Garden-like filter if asked: for tests that need the defender as a live Popen."""
    py, _ = unpriv_python()
    cmd = as_root() if as_root_user else [*as_nobody()]
    if garden:
        cmd += [py, "-m", "tests.defender.gardenlike"]
    return [*cmd, py, "-m", "garrison", "defender", "app-embedded", "-q", *args]


def rule(**controls: Any) -> dict[str, Any]:
    return {"rules": [{"name": "test-rule", **controls}]}


ALLOW_ALL: dict[str, Any] = rule()
