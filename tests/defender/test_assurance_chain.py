"""Issue 18's whole chain with real parts: a droplet staged by the exported buildpack the way CF's
lifecycle runs it (bin/detect, bin/supply, bin/finalize, CF env and directories) passes; the console's
blobstore watcher maps the stored droplet to its app; advisories imported *after* the console started
make the rescan fail it; the next start of the real defender is refused, with an audit in the console.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from garrison.scan.identity import IDENTITY_FILE, DropletIdentity
from garrison.scan.vulndb.index import VulnIndex
from tests.defender.helpers import Sandbox, unpriv_python
from tests.defender.test_console import _wait_audits
from tests.fixtures.console import RunningConsole
from tests.polling import until
from tests.scan.cfstaging import (
    CfApp,
    python_buildpack,
    source_profile,
    stage,
    unpack_buildpack,
    unpack_droplet,
)
from tests.scan.helpers import REPO, osv

pytestmark = pytest.mark.slow

SHOPLIB_ADVISORY = osv(
    "GHSA-shop-lib0-0001",
    "shoplib",
    fixed="1.1",
    vector="CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N",
    aliases=["CVE-2026-40001"],
    summary="shoplib deserialises untrusted carts",
    modified="2026-11-30T00:00:00Z",
)
UNRELATED = osv("GHSA-other-0000-0001", "otherlib", versions=["0.1"])
SITE = {"shoplib-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: shoplib\nVersion: 1.0\n\nbody\n"}


def garrison(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "garrison", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def _until(what: str, fn: Any, timeout: float = 90) -> Any:
    return until(fn, timeout, what, interval=0.3)


def test_stage_pass_then_new_advisory_rescan_fails_and_restart_is_refused(
    console_factory: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    stage_db, console_db, blobs = tmp_path / "stage-db", tmp_path / "console-db", tmp_path / "blobstore"
    with VulnIndex(stage_db, create=True) as ix:
        ix.import_advisories([UNRELATED], "buildpack bundle")
    # the console's DB does not exist yet: it is imported after start-up
    console: RunningConsole = console_factory(
        args=["--blobstore", str(blobs), "--blobstore-poll", "0.3"], env={"GARRISON_DB_DIR": str(console_db)}
    )
    with console.api() as c:
        c.put(
            "/policies/assurance",
            json={"name": "prod", "thresholds": {"critical": 0, "high": 0}, "runtime_effect": "prevent"},
        ).raise_for_status()

    # the operator's buildpack: bundled DB, no console settings (the app's env names the console)
    exp = garrison("buildpack", "export", str(tmp_path / "garrison_bp"), "--db", str(stage_db), "--zip")
    assert exp.returncode == 0, exp.stderr
    bp = unpack_buildpack(tmp_path / "garrison_bp.zip", tmp_path / "buildpacks" / "garrison")
    shim = tmp_path / "garrison-shim"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m garrison "$@"\n')
    shim.chmod(0o755)
    pybp = python_buildpack(tmp_path / "buildpacks" / "python", SITE)
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("print('app ran')\n")
    (src / "requirements.txt").write_text("shoplib==1.0\n")
    app = CfApp("shop-web")
    staged = stage(
        [pybp, bp],
        src,
        tmp_path / "staging",
        app,
        {
            "GARRISON_BIN": str(shim),
            "PYTHONPATH": str(REPO),
            "GARRISON_CONSOLE_URL": console.url,
            "GARRISON_CA_CERT": console.ca_pem,  # the PEM itself, as `cf set-env` would carry it
            "GARRISON_USER": console.admin_user,
            "GARRISON_PASSWORD": console.admin_password,
        },
    )
    assert staged.returncode == 0, staged.output
    assert (
        "assurance policy 'prod' from" in staged.output and "assurance policy 'prod': PASS" in staged.output
    )
    ident = DropletIdentity.model_validate_json((staged.deps / "1" / IDENTITY_FILE).read_text())
    assert ident.app.guid == app.guid and ident.phase == "finalize" and ident.deps_idx == "1"
    digest = ident.digest

    with console.api() as c:
        staging = c.get("/scans", params={"app_guid": app.guid}).json()
        assert staging and {s["source"] for s in staging} == {"staging"} and staging[0]["digest"] == digest

        # the cloud controller stores the droplet: <blobstore>/cc-droplets/ab/cd/<droplet guid>/<sha>
        dguid = str(uuid.uuid4())
        blob = blobs / "cc-droplets" / dguid[:2] / dguid[2:4] / dguid / ("f" * 64)
        blob.parent.mkdir(parents=True)
        assert staged.droplet is not None
        shutil.copyfile(staged.droplet, blob)

        def blob_reports() -> list[dict[str, Any]]:
            rows = c.get("/scans", params={"app_guid": app.guid}).json()
            return [r for r in rows if r["source"] == "blobstore"]

        first = _until("the blobstore scan", blob_reports)[0]
        # blob -> app guid -> droplet: the same identity as staging, the CF app instead of the blob path
        assert first["digest"] == digest and first["app_name"] == "shop-web"
        assert (first["org"], first["space"]) == ("acme", "prod") and first["blob"].startswith("cc-droplets/")
        v = c.get("/scans/verdict", params={"digest": digest, "app_guid": app.guid}).json()
        assert v["verdict"] == "pass", v  # the rescan had no DB yet; the staging verdict (with one) decides

    py, _ = unpriv_python()
    unpack_droplet(staged.droplet, sandbox.root)
    env = {
        "INSTALL_BUNDLE": console.install_bundle(),
        "VCAP_APPLICATION": app.vcap(0),
        "HOME": str(sandbox.root),
        **source_profile(sandbox.root),
    }
    assert env["GARRISON_DROPLET_DIGEST"] == digest
    ran = sandbox.run(None, [py, "app.py"], env=env)
    assert ran.returncode == 0 and "app ran" in ran.stdout, ran.stderr

    # a new advisory is published and imported after the console started
    adv = tmp_path / "advisories"
    adv.mkdir()
    (adv / "GHSA-shop-lib0-0001.json").write_text(json.dumps(SHOPLIB_ADVISORY))
    imp = garrison("db", "import", str(adv), env={"GARRISON_DB_DIR": str(console_db)})
    assert imp.returncode == 0, imp.stdout + imp.stderr

    with console.api() as c:

        def failed() -> dict[str, Any] | None:
            v = c.get("/scans/verdict", params={"digest": digest, "app_guid": app.guid}).json()
            return v if v["verdict"] == "fail" else None

        v = _until("the rescan with the new advisory", failed)
        assert v["source"] == "blobstore" and v["db_revision"].startswith("1@"), v
        assert any("GHSA-shop-lib0-0001 in shoplib 1.0" in r for r in v["reasons"]), v
        row = c.get(f"/scans/{v['scan_id']}").json()
        vuln = row["body"]["vulnerabilities"][0]
        assert vuln["fixed_versions"] == ["1.1"] and vuln["severity"] == "high"
        # another app with byte-identical content is not judged by this app's verdict
        other = c.get("/scans/verdict", params={"digest": digest, "app_guid": str(uuid.uuid4())}).json()
        assert other["verdict"] == "unknown"

    refused = sandbox.run(None, [py, "app.py"], env=env)
    assert refused.returncode == 126, refused.stderr
    assert "app ran" not in refused.stdout and "non-compliant" in refused.stderr
    audits = _wait_audits(console, "shop-web", type="assurance")
    assert audits and audits[0]["effect"] == "prevent" and "GHSA-shop-lib0-0001" in audits[0]["message"]
