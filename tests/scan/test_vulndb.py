"""OSV import, index and matching: range semantics, ecosystems' version orders, aliases, withdrawn."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml

from garrison.scan.model import Package, Severity
from garrison.scan.vulndb.cvss import base_score
from garrison.scan.vulndb.index import VulnIndex
from garrison.scan.vulndb.load import LoadErrors, iter_advisories
from garrison.scan.vulndb.match import is_affected, match_packages
from garrison.scan.vulndb.rubysec import satisfies
from garrison.scan.vulndb.versions import parse


@pytest.mark.parametrize(
    ("vector", "score"),
    [
        ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 9.3),
        ("AV:N/AC:L/Au:N/C:P/I:P/A:P", 7.5),
        ("3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:L/I:L/A:N", 4.8),  # Node.js core writes no CVSS: prefix
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
        ("CVSS:3.0/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", 1.8),
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 9.9),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
    ],
)
def test_cvss3_base_score(vector: str, score: float) -> None:
    assert base_score(vector) == score


def test_cvss_rejects_garbage() -> None:
    assert base_score("CVSS:2.0/AV:N") is None
    assert base_score("CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H") is None


@pytest.mark.parametrize(
    ("eco", "lo", "hi"),
    [
        ("PyPI", "1.0rc1", "1.0"),
        ("PyPI", "2.9", "2.10"),
        ("npm", "1.0.0-beta.2", "1.0.0"),
        ("Go", "v0.9.0", "v0.10.0"),
        ("Maven", "1.0-SNAPSHOT", "1.0"),
        ("Maven", "2.9.10.7", "2.10.0"),
        ("RubyGems", "2.2.1.rc1", "2.2.1"),
        ("Debian:12", "1.2-1", "1:0.1-1"),
        ("Ubuntu:22.04", "1.0~rc1-1", "1.0-1"),
    ],
)
def test_version_orders(eco: str, lo: str, hi: str) -> None:
    assert parse(eco, lo) < parse(eco, hi)


def _adv(**ranges: object) -> dict[str, object]:
    return dict(ranges)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("0.9", False),
        ("1.0", True),
        ("1.5", True),
        ("2.0", False),
        ("3.0", True),
        ("3.1", True),
        ("3.2", False),
    ],
)
def test_osv_range_events(version: str, expected: bool) -> None:
    data = {
        "ranges": [
            {"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}, {"fixed": "2.0"}]},
            {"type": "ECOSYSTEM", "events": [{"introduced": "3.0"}, {"last_affected": "3.1"}]},
        ]
    }
    assert is_affected("PyPI", version, data)[0] is expected


def test_osv_versions_list_limit_and_fixed_reported() -> None:
    assert is_affected("PyPI", "1.3.4.3", {"versions": ["1.3.4.3"], "ranges": []})[0]
    lim = {"ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"limit": "1.5.0"}]}]}
    assert is_affected("npm", "1.4.0", lim)[0] and not is_affected("npm", "1.5.0", lim)[0]
    multi = {
        "ranges": [
            {
                "type": "SEMVER",
                "events": [
                    {"introduced": "0"},
                    {"fixed": "1.2.3"},
                    {"introduced": "2.0.0"},
                    {"fixed": "2.0.4"},
                ],
            }
        ]
    }
    assert is_affected("npm", "1.2.0", multi) == (True, ["1.2.3", "2.0.4"])
    assert is_affected("npm", "2.0.1", multi) == (True, ["2.0.4"])
    assert is_affected("npm", "1.9.0", multi)[0] is False
    assert is_affected("Go", "v1.2.0", multi)[0]  # Go versions carry a v prefix
    git = {"ranges": [{"type": "GIT", "events": [{"introduced": "0"}]}]}
    assert is_affected("PyPI", "1.0", git)[0] is False


def test_rubygems_requirements() -> None:
    assert satisfies("5.2.4.3", "~> 5.2.4, >= 5.2.4.3")
    assert not satisfies("5.3.0", "~> 5.2.4, >= 5.2.4.3")
    assert satisfies("6.0.3", ">= 6.0.3")
    assert not satisfies("2.2.0", ">= 2.2.1")
    assert satisfies("1.0", "< 1.1")


def _write(p: Path, doc: object) -> Path:
    p.write_text(json.dumps(doc) if p.suffix == ".json" else yaml.safe_dump(doc))
    return p


def test_import_sources_aliases_withdrawn_and_bad_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0"}]}]
    a = {
        "id": "PYSEC-1",
        "aliases": ["CVE-1"],
        "modified": "2024-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "Demo_Pkg"}, "ranges": rng}],
        "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
    }
    b = {
        "id": "GHSA-x",
        "aliases": ["CVE-1"],
        "modified": "2024-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "demo-pkg"}, "ranges": rng}],
        "database_specific": {"severity": "MODERATE"},
    }
    w = {
        "id": "PYSEC-2",
        "withdrawn": "2024-02-01T00:00:00Z",
        "modified": "2024-02-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "demo-pkg"}, "ranges": rng}],
    }
    _write(src / "a.json", a)
    _write(src / "b.yaml", b)
    with zipfile.ZipFile(src / "all.zip", "w") as zf:
        zf.writestr("PYSEC-2.json", json.dumps(w))
        zf.writestr("broken.json", "{not json")
    (src / "bad.yaml").write_text("- just\n- a list\n")
    errors = LoadErrors()
    db = tmp_path / "db"
    with VulnIndex(db, create=True) as ix:
        res = ix.import_advisories(iter_advisories([src, tmp_path / "missing.json"], errors), "test")
        assert res.imported == 2 and res.withdrawn == 1
        assert len(errors.errors) == 3 and any("broken.json" in e for e in errors.errors)
        assert any("missing.json" in e for e in errors.errors)
        findings = match_packages(ix, [Package(ecosystem="PyPI", name="demo.pkg", version="1.0")])
        assert len(findings) == 1  # PYSEC-1 and GHSA-x share CVE-1: one finding
        f = findings[0]
        assert f.id == "GHSA-x" or f.id == "PYSEC-1"
        assert {f.id, *f.aliases} == {"PYSEC-1", "GHSA-x", "CVE-1"}
        assert f.severity is Severity.CRITICAL and f.cvss_score == 9.8 and f.fixed_versions == ["2.0"]
        assert match_packages(ix, [Package(ecosystem="PyPI", name="demo-pkg", version="2.0")]) == []
        gen = ix.generation()
        # an older copy does not replace a newer record
        older = dict(a, modified="2020-01-01T00:00:00Z", affected=[])
        assert ix.import_advisories([older], "old").skipped_older == 1
        assert ix.generation() == gen + 1
        st = ix.status()
        assert st["advisories"] == 2 and st["by_ecosystem"] == {"PyPI": 2}


def test_missing_db_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="garrison db import"):
        VulnIndex(tmp_path / "nothing")


def test_real_advisories_pypi_go_rubysec(advisory_db: Path, advisory_tree: Path) -> None:
    """Check findings against what the advisory files themselves say."""
    pysec = yaml.safe_load(
        (advisory_tree / "pypa-advisory-db-vulns/werkzeug/PYSEC-2023-221.yaml").read_text()
    )
    go = json.loads((advisory_tree / "go-vulndb-osv/GO-2023-2102.json").read_text())
    with VulnIndex(advisory_db) as ix:
        w = {
            f.id: f for f in match_packages(ix, [Package(ecosystem="PyPI", name="werkzeug", version="2.2.2")])
        }
        assert "PYSEC-2023-221" in w
        assert set(pysec["aliases"]) <= set(w["PYSEC-2023-221"].aliases)
        fixed = [e["fixed"] for r in pysec["affected"][0]["ranges"] for e in r["events"] if "fixed" in e]
        assert set(w["PYSEC-2023-221"].fixed_versions) <= set(fixed)
        assert w["PYSEC-2023-221"].severity is Severity.HIGH  # CVSS:3.1/.../A:H = 7.5
        top = [
            f.id for f in match_packages(ix, [Package(ecosystem="PyPI", name="werkzeug", version="3.1.3")])
        ]
        assert "PYSEC-2023-221" not in top
        n = {
            f.id: f
            for f in match_packages(ix, [Package(ecosystem="Go", name="golang.org/x/net", version="v0.7.0")])
        }
        assert go["id"] in n and n[go["id"]].fixed_versions == ["0.17.0"]
        r = {
            f.id: f
            for f in match_packages(ix, [Package(ecosystem="RubyGems", name="resque", version="2.2.0")])
        }
        assert "CVE-2023-50725" in r and r["CVE-2023-50725"].fixed_versions == ["2.2.1"]
        assert r["CVE-2023-50725"].severity is Severity.MEDIUM  # cvss_v3: 6.3
        assert "CVE-2023-50725" not in {
            f.id for f in match_packages(ix, [Package(ecosystem="RubyGems", name="resque", version="2.6.0")])
        }


def test_debian_release_scoped_advisories(tmp_path: Path) -> None:
    adv = {
        "id": "DSA-5678-1",
        "modified": "2024-05-01T00:00:00Z",
        "affected": [
            {
                "package": {"ecosystem": "Debian:12", "name": "openssl"},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.13-1~deb12u1"}]}
                ],
            }
        ],
    }
    with VulnIndex(tmp_path, create=True) as ix:
        ix.import_advisories([adv], "t")
        hit = match_packages(ix, [Package(ecosystem="Debian:12", name="openssl", version="3.0.11-1~deb12u2")])
        assert [f.fixed_versions for f in hit] == [["3.0.13-1~deb12u1"]]
        assert (
            match_packages(ix, [Package(ecosystem="Debian:11", name="openssl", version="1.1.1n-0+deb11u5")])
            == []
        )
        assert (
            match_packages(ix, [Package(ecosystem="Debian:12", name="openssl", version="3.0.13-1~deb12u1")])
            == []
        )
