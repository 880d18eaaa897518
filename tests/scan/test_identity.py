"""One droplet identity from staging to blobstore to run time (issue 18 items 1-4)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from garrison.scan.assurance import AssurancePolicy
from garrison.scan.blobstore import BlobstoreScanner
from garrison.scan.identity import (
    IDENTITY_FILE,
    DropletIdentity,
    collect_droplet_dir,
    collect_tar,
    collect_tree,
    write_identity,
)
from garrison.scan.model import AppRef, ScanReport
from garrison.scan.source import Limits, ScanRefused
from garrison.scan.vulndb.index import VulnIndex
from tests.scan.cfstaging import pack_droplet, unpack_droplet
from tests.scan.helpers import osv, write_tree

APP = AppRef(guid="6f1c0d7e-0000-4000-8000-000000000001", name="shop", space="prod", org="acme")
ADVISORY = osv("DEMO-2026-1", "demo", fixed="1.1", vector="CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H")
META = "deps/0/python/lib/python3.11/site-packages/demo-1.0.dist-info/METADATA"


def staged_tree(root: Path, *, demo: str = "1.0", phase: str = "finalize") -> tuple[Path, Path, str]:
    """Build dir + deps dir after a supply buildpack (deps/0) and Garrison (deps/1) ran."""
    build = write_tree(root / "app", {"app.py": "print(1)\n", "static/logo.svg": "<svg/>"})
    deps = root / "deps"
    write_tree(
        deps, {META: f"Metadata-Version: 2.1\nName: demo\nVersion: {demo}\n", "0/config.yml": "name: py\n"}
    )
    (deps / "1").mkdir(parents=True, exist_ok=True)
    digest = collect_tree({"app": build, "deps": deps}).digest(own={"deps/1"})
    write_identity(deps / "1", DropletIdentity(digest=digest, app=APP, deps_idx="1", phase=phase))  # type: ignore[arg-type]
    (deps / "1" / "config.yml").write_text("name: garrison-scanner\n")
    return build, deps, digest


def test_staging_blobstore_and_runtime_compute_the_same_identity(tmp_path: Path) -> None:
    build, deps, digest = staged_tree(tmp_path / "stage")
    prof = tmp_path / "stage" / "profile.d"
    prof.mkdir()
    droplet = pack_droplet(build, deps, prof, tmp_path / "droplet.tgz")
    from_tar = collect_tar(droplet)
    assert from_tar.digest() == digest
    ident = from_tar.identity()
    assert ident is not None and ident.app.guid == APP.guid and ident.digest == digest
    home = tmp_path / "home"
    unpack_droplet(droplet, home)
    unpacked = collect_droplet_dir(home)
    assert unpacked.digest() == digest and unpacked.identity() == ident
    env = (home / "deps" / "1" / "profile.d" / "garrison.sh").read_text()
    assert f"GARRISON_DROPLET_DIGEST={digest}" in env


def test_identity_covers_dependencies_not_only_the_app_tree(tmp_path: Path) -> None:
    _, _, a = staged_tree(tmp_path / "a", demo="1.0")
    _, _, b = staged_tree(tmp_path / "b", demo="2.0")  # same app source, other dependency version
    assert a != b
    build, deps, c = staged_tree(tmp_path / "c")
    assert c == a  # same content, same digest: the app guid separates apps (console side)
    # Garrison's own files carry the digest and are left out; anything else in deps/ is not
    (deps / "1" / "profile.d" / "garrison.sh").write_text("export GARRISON_DROPLET_DIGEST=other\n")
    assert collect_tree({"app": build, "deps": deps}).digest() == c
    (deps / "1" / "extra.py").write_text("x")
    assert collect_tree({"app": build, "deps": deps}).digest() != c


def test_a_planted_identity_record_does_not_hide_files(tmp_path: Path) -> None:
    build, deps, digest = staged_tree(tmp_path / "s")
    # a later buildpack writes a record claiming another deps index: its config.yml is not excluded
    rec = DropletIdentity(digest=digest, deps_idx="1")
    (deps / "0" / IDENTITY_FILE).write_text(rec.model_dump_json())
    cd = collect_tree({"app": build, "deps": deps})
    assert cd.own_dirs() == {"deps/1"}
    (deps / "0" / "config.yml").write_text("name: changed\n")
    assert collect_tree({"app": build, "deps": deps}).digest() != cd.digest()


def test_tar_hardlinks_and_hostile_members(tmp_path: Path) -> None:
    build, deps, _ = staged_tree(tmp_path / "s")
    plain = pack_droplet(build, deps, tmp_path / "s" / "app", tmp_path / "plain.tgz")
    linked = tmp_path / "linked.tgz"
    with tarfile.open(plain) as src, tarfile.open(linked, "w:gz") as dst:
        first: str | None = None
        for m in src.getmembers():
            f = src.extractfile(m) if m.isreg() else None
            if m.isreg() and m.name.endswith("logo.svg"):
                first = m.name
            dst.addfile(m, f)
        assert first is not None
        hl = tarfile.TarInfo("./app/static/logo-copy.svg")
        hl.type, hl.linkname = tarfile.LNKTYPE, first
        dst.addfile(hl)
        for evil in ("../../etc/passwd", "/abs/app/x"):
            ti = tarfile.TarInfo(evil)
            ti.size = 1
            dst.addfile(ti, io.BytesIO(b"x"))
    (build / "static" / "logo-copy.svg").write_text("<svg/>")
    assert collect_tar(linked).digest() == collect_tree({"app": build, "deps": deps}).digest()
    with pytest.raises(ScanRefused, match="more than"):
        collect_tar(plain, Limits(max_files=3))
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(plain.read_bytes()[:200])
    with pytest.raises(ScanRefused, match="corrupt"):
        collect_tar(bad)


def test_rescans_map_blob_to_app_use_late_db_imports_and_policy_changes(tmp_path: Path) -> None:
    build, deps, digest = staged_tree(tmp_path / "s")
    blobs = tmp_path / "blobs"
    blob = blobs / "cc-droplets" / "ab" / "cd" / "abcd-guid" / ("f" * 64)
    blob.parent.mkdir(parents=True)
    pack_droplet(build, deps, tmp_path / "s" / "app", blob)
    foreign = blobs / "cc-droplets" / "ef" / "01" / "no-garrison"
    foreign.parent.mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    pack_droplet(tmp_path / "s" / "app", tmp_path / "empty", tmp_path / "s" / "app", foreign)
    db = tmp_path / "db"  # not there when the rescanner starts
    policy = [AssurancePolicy(max_db_age_days=None, thresholds={"critical": 0})]  # type: ignore[arg-type]
    got: list[ScanReport] = []
    scanner = BlobstoreScanner(blobs, db, lambda _p, r: got.append(r), policy=lambda: policy[0])
    scanner.scan_once()
    mine = [r for r in got if r.blob.endswith("f" * 64)]
    assert len(got) == 2 and len(mine) == 1
    r = mine[0]
    assert r.digest == digest and r.archive_sha256 != digest and r.app is not None
    assert r.app.guid == APP.guid and r.app_name == "shop" and r.app.label == "acme/prod/shop"
    assert r.verdict == "pass" and r.db_revision == ""
    other = next(x for x in got if x is not r)
    assert other.app is None and other.app_name == "" and other.blob == "cc-droplets/ef/01/no-garrison"
    scanner.scan_once()
    assert len(got) == 2  # nothing changed
    with VulnIndex(db, create=True) as ix:
        ix.import_advisories([ADVISORY], "late import")
    scanner.scan_once()  # a DB that appeared after start-up is used
    r = next(x for x in got[2:] if x.digest == digest)
    assert r.verdict == "fail" and [v.id for v in r.vulnerabilities] == ["DEMO-2026-1"]
    assert r.db_revision.startswith("1@")
    with VulnIndex(db, writable=True) as ix:
        ix.import_advisories([{**ADVISORY, "modified": "2026-02-01T00:00:00Z"}], "second import")
    n = len(got)
    scanner.scan_once()  # and every later import
    assert len(got) == n + 2
    assert [x.db_revision[:2] for x in got[n:] if x.digest == digest] == ["2@"]
    policy[0] = AssurancePolicy.model_validate(
        {
            **policy[0].model_dump(),
            "vulnerability_exceptions": [{"id": "DEMO-2026-1", "reason": "not reachable"}],
        }
    )
    n = len(got)
    scanner.scan_once()  # a policy change re-judges every droplet
    r = next(x for x in got[n:] if x.digest == digest)
    assert r.verdict == "pass" and [w.id for w in r.waived] == ["DEMO-2026-1"]
    assert r.waived[0].reason == "not reachable"


def test_supply_phase_identity_differs_from_the_final_droplet(tmp_path: Path) -> None:
    build, deps, digest = staged_tree(tmp_path / "s", phase="supply")
    write_tree(deps, {"2/python/bin/python3": "elf"})  # a later (final) buildpack installs more
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    pack_droplet(build, deps, tmp_path / "s" / "app", blobs / "d1")
    got: list[ScanReport] = []
    BlobstoreScanner(blobs, None, lambda _p, r: got.append(r)).scan_once()
    r = got[0]
    assert r.digest != digest and r.app is not None and r.app.guid == APP.guid
    assert any("later buildpacks added files" in n.message for n in r.notices)
    home = tmp_path / "home"
    unpack_droplet(blobs / "d1", home)
    assert collect_droplet_dir(home).digest() == r.digest  # what the defender will ask about


def test_app_ref_from_vcap_never_raises() -> None:
    for raw in (None, "", "[]", "{bad", json.dumps({"application_id": 5})):
        assert AppRef.from_vcap(raw) is None
    ref = AppRef.from_vcap(json.dumps({"application_id": "g", "name": "n", "space_name": "s"}))
    assert ref is not None and ref.label == "s/n"
