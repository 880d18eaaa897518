"""Advisory sources: RubySec records sharing a CVE all survive the import, the Node.js Security WG
npm and core advisories are imported with format detection and matched with npm's range semantics,
and `garrison db import` prints per-source counts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from garrison.scan.model import Package, Severity
from garrison.scan.scanner import ScanOptions, scan
from garrison.scan.vulndb.index import SchemaError, VulnIndex
from garrison.scan.vulndb.load import LoadErrors, iter_advisories
from garrison.scan.vulndb.match import match_packages
from garrison.scan.vulndb.npm_semver import in_range
from tests.scan.advisories import NODE_CORE, NODE_NPM, RUBYSEC, shared_or_skip
from tests.scan.helpers import REPO, make_droplet


def _ids(ix: VulnIndex, eco: str, name: str, version: str) -> dict[str, object]:
    return {f.id: f for f in match_packages(ix, [Package(ecosystem=eco, name=name, version=version)])}


def test_rubysec_gems_sharing_a_cve_are_all_kept(advisory_db: Path) -> None:
    with VulnIndex(advisory_db) as ix:
        assert "CVE-2019-5477" in _ids(ix, "RubyGems", "nokogiri", "1.10.3")
        assert "CVE-2019-5477" in _ids(ix, "RubyGems", "rexical", "1.0.6")
        assert "CVE-2019-5477" not in _ids(ix, "RubyGems", "nokogiri", "1.10.4")
        assert "CVE-2018-8048" in _ids(ix, "RubyGems", "loofah", "2.2.0")
        assert "CVE-2018-8048" in _ids(ix, "RubyGems", "nokogiri", "1.8.2")
        saml = _ids(ix, "RubyGems", "ruby-saml", "1.16.0")["CVE-2024-45409"]
        assert saml.severity is Severity.CRITICAL and saml.fixed_versions == ["1.17.0"]  # type: ignore[attr-defined]
        assert "CVE-2024-45409" in _ids(ix, "RubyGems", "omniauth-saml", "2.1.1")
        assert "CVE-2024-45409" not in _ids(ix, "RubyGems", "omniauth-saml", "2.1.2")
        # each gem keeps its own fix: nokogiri's 1.10.4 is not rexical's 1.0.7
        assert _ids(ix, "RubyGems", "rexical", "1.0.6")["CVE-2019-5477"].fixed_versions == ["1.0.7"]  # type: ignore[attr-defined]


def test_db_import_prints_counts_per_source(advisory_tree: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.json").write_text("{")
    (bad / "W.json").write_text(
        json.dumps(
            {
                "id": "PYSEC-0000-1",
                "withdrawn": "2024-01-01T00:00:00Z",
                "affected": [{"package": {"ecosystem": "PyPI", "name": "x"}, "versions": ["1"]}],
            }
        )
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "garrison",
            "db",
            "import",
            str(advisory_tree),
            str(bad),
            "--db",
            str(tmp_path / "db"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode == 2 and "broken.json" in r.stderr  # bad input named, the rest imported
    rows = {line.split()[0]: line.split()[1:4] for line in r.stdout.splitlines() if line and line[0] != " "}
    n = len(RUBYSEC)
    assert rows["rubysec"] == [str(n), str(n), "0"]
    assert rows["nodejs-security-wg:npm"] == [str(len(NODE_NPM))] * 2 + ["0"]  # index.json not read twice
    assert rows["nodejs-security-wg:core"] == [str(len(NODE_CORE))] * 2 + ["0"]
    assert rows["osv:PyPI"] == ["4", "3", "1"] and "skipped 1: withdrawn" in r.stdout
    assert rows["unreadable"] == ["files", "1", "0"]


def test_reimport_replaces_per_package_and_reads_twice_once(advisory_tree: Path, tmp_path: Path) -> None:
    with VulnIndex(tmp_path, create=True) as ix:
        errors = LoadErrors()
        res = ix.import_advisories(iter_advisories([advisory_tree, advisory_tree], errors), "twice")
        rs = res.sources["rubysec"]
        assert rs.read == 2 * len(RUBYSEC) and rs.stored == len(RUBYSEC)
        assert rs.skipped == {"read twice in this import (an older or identical copy)": len(RUBYSEC)}
        res = ix.import_advisories(
            iter_advisories([advisory_tree / "rubysec-advisory-db-gems"], errors), "again"
        )
        assert res.sources["rubysec"].stored == len(RUBYSEC)
        assert "CVE-2019-5477" in _ids(ix, "RubyGems", "nokogiri", "1.10.3")
        assert "CVE-2019-5477" in _ids(ix, "RubyGems", "rexical", "1.0.6")


def test_whole_shared_rubysec_tree_stored_equals_read(tmp_path: Path) -> None:
    """Whole-tree check (runs where ../shared is beside the clone, as in CI)."""
    vulndb = shared_or_skip()
    files = list((vulndb / "rubysec-advisory-db-gems").rglob("*.yml"))
    with VulnIndex(tmp_path, create=True) as ix:
        errors = LoadErrors()
        res = ix.import_advisories(iter_advisories([vulndb / "rubysec-advisory-db-gems"], errors), "rubysec")
        assert errors.errors == []
        c = res.sources["rubysec"]
        assert c.read == len(files) and c.stored == c.read and c.skipped == {}
        assert "CVE-2019-5477" in _ids(ix, "RubyGems", "nokogiri", "1.10.3")
        assert "CVE-2018-8048" in _ids(ix, "RubyGems", "loofah", "2.2.0")


def test_whole_shared_tree_imports_every_source(shared_db: Path) -> None:
    """Whole-tree check: every advisory of the shared folders is stored or skipped with a reason."""
    with VulnIndex(shared_db) as ix:
        st = ix.status()
        assert {"Go", "PyPI", "RubyGems", "npm", "Node.js"} <= set(st["by_ecosystem"])
        assert "NSWG-ECO-368" in _ids(ix, "npm", "lodash", "4.17.4")


@pytest.mark.parametrize(
    ("version", "spec", "expected"),
    [
        ("3.1.2", "< 3.1.3  || >= 4.0.0 <4.1.1", True),  # space after the operator, double space
        ("4.1.0", "< 3.1.3  || >= 4.0.0 <4.1.1", True),
        ("4.1.1", "< 3.1.3  || >= 4.0.0 <4.1.1", False),
        ("1.6.9", "~1.6.5 || >=1.7.2", True),
        ("1.7.1", "~1.6.5 || >=1.7.2", False),
        ("8.1.3", "8.x || 7.x", True),
        ("9.0.0", "8.x || 7.x", False),
        ("3.0.0-rc.1", "=3.0.0-rc.1", True),
        ("2.0.0-rc.1", ">=1.0.0 <3.0.0", True),  # pre-releases included, as npm audit does
        ("1.0.0", "<0.0.0", False),
        ("not-a-version", "*", False),
    ],
)
def test_npm_range_semantics(version: str, spec: str, expected: bool) -> None:
    assert in_range(version, spec) is expected


def test_nodejs_wg_npm_advisories(advisory_db: Path) -> None:
    with VulnIndex(advisory_db) as ix:
        lodash = _ids(ix, "npm", "lodash", "4.17.4")
        assert {"NSWG-ECO-368", "NSWG-ECO-493"} <= set(lodash)
        f = lodash["NSWG-ECO-493"]
        assert f.aliases == ["CVE-2018-16487"] and f.fixed_versions == ["4.17.11"]  # type: ignore[attr-defined]
        # scored from its vector (5.7), not the published cvss_score (7.0) that disagrees with it
        assert f.severity is Severity.MEDIUM and f.cvss_score == 5.7  # type: ignore[attr-defined]
        assert f.sources == ["nodejs-security-wg"]  # type: ignore[attr-defined]
        assert set(_ids(ix, "npm", "lodash", "4.17.11")) == set()
        assert "NSWG-ECO-77" in _ids(ix, "npm", "hawk", "4.0.5")
        assert "NSWG-ECO-35" not in _ids(ix, "npm", "serve-static", "1.6.5")
        serialize = _ids(ix, "npm", "node-serialize", "0.0.4")["NSWG-ECO-311"]
        assert serialize.fixed_versions == [] and serialize.severity is Severity.CRITICAL  # type: ignore[attr-defined]
        assert "NSWG-ECO-410" in _ids(ix, "npm", "mongo-express", "0.40.0")  # patched_versions: null


def _node_elf(version: str) -> bytes:
    """An ELF file carrying `process.release.headersUrl` the way a real `node` binary does."""
    url = f"https://nodejs.org/download/release/v{version}/node-v{version}-headers.tar.gz"
    return b"\x7fELF\x02\x01\x01" + b"\0" * 4089 + url.encode() + b"\0" * 64


def test_node_binary_in_droplet_matched_against_core_advisories(advisory_db: Path, tmp_path: Path) -> None:
    droplet = make_droplet(
        tmp_path / "node.tgz",
        {
            "deps/0/node/bin/node": _node_elf("20.19.0"),
            "app/server.js": "require('http').createServer().listen(process.env.PORT)\n",
        },
    )
    report = scan(droplet, ScanOptions(db_dir=advisory_db))
    node = [p for p in report.packages if p.ecosystem == "Node.js"]
    assert [(p.name, p.version, p.locations) for p in node] == [("node", "20.19.0", ["deps/0/node/bin/node"])]
    core = {v.id: v for v in report.vulnerabilities if v.ecosystem == "Node.js"}
    assert set(core) == {"NSWG-CORE-158", "NSWG-CORE-163"}
    assert core["NSWG-CORE-158"].aliases == ["CVE-2025-55132"] and core["NSWG-CORE-158"].fixed_versions == [
        "20.20.0"
    ]
    assert core["NSWG-CORE-163"].severity is Severity.HIGH  # Node.js core publishes a label only
    with VulnIndex(advisory_db) as ix:
        old = _ids(ix, "Node.js", "node", "6.6.0")["NSWG-CORE-18"]
        assert old.severity is Severity.MEDIUM and old.cvss_score == 4.8  # type: ignore[attr-defined]
        assert old.fixed_versions == ["6.7.0"]  # type: ignore[attr-defined]
        assert _ids(ix, "Node.js", "node", "20.20.2") == {}


def test_real_node_binary_version(tmp_path: Path) -> None:
    """The runtime detector on this machine's real `node` binary agrees with `node --version`."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node binary on this machine")
    real = Path(node).resolve()
    (tmp_path / "deps/0/node/bin").mkdir(parents=True)
    shutil.copyfile(real, tmp_path / "deps/0/node/bin/node")
    want = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    report = scan(tmp_path, ScanOptions(secrets=False))
    assert [(p.ecosystem, p.version) for p in report.packages] == [("Node.js", want.lstrip("v"))]


def test_scan_opens_the_database_read_only(advisory_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    shutil.copytree(advisory_db, db)
    (db / "osv.sqlite").chmod(0o444)
    db.chmod(0o555)  # not even a journal could be created
    try:
        with VulnIndex(db) as ix:
            assert ix.generation() >= 1
            with pytest.raises(Exception, match=r"readonly|read-only"):
                ix.conn.execute("DELETE FROM meta")
        report = scan(make_droplet(tmp_path / "d.tgz", {"app/x": "1"}), ScanOptions(db_dir=db))
        assert report.db_updated_at is not None
    finally:
        db.chmod(0o755)


def test_old_schema_is_a_clear_error(tmp_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(tmp_path / "osv.sqlite") as c:
        c.executescript(
            "CREATE TABLE advisory (id TEXT PRIMARY KEY); CREATE TABLE meta (key TEXT, value TEXT);"
        )
    with pytest.raises(SchemaError, match="garrison db import"):
        VulnIndex(tmp_path)
    with VulnIndex(tmp_path, create=True) as ix:  # an import rebuilds it
        assert ix.status()["advisories"] == 0
