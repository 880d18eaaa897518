"""Small advisory fixtures in the real formats of the shared data (OSV YAML/JSON, RubySec YAML, Node.js
Security WG JSON), so the scanner suite needs no copy of ../shared/vulndb.

Each record restates the facts of a real public advisory (id, aliases, package, ranges, CVSS) as that
database publishes them; long descriptions are shortened. `write_advisory_tree(root)` lays them out
like the shared folder (pypa-advisory-db-vulns/, go-vulndb-osv/, rubysec-advisory-db-gems/,
nodejs-security-wg/vuln/{npm,core}/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.scan.helpers import VULNDB

PYPA: dict[str, dict[str, Any]] = {
    "werkzeug/PYSEC-2023-221.yaml": {
        "id": "PYSEC-2023-221",
        "details": "Werkzeug multipart parsing of a file starting with CR or LF grows a buffer without "
        "bound: denial of service. Patched in 3.0.1.",
        "aliases": ["CVE-2023-46136", "GHSA-hrfv-mqp8-q5rw"],
        "modified": "2023-11-08T18:38:34.170214Z",
        "published": "2023-10-25T18:17:00Z",
        "affected": [
            {
                "package": {"name": "werkzeug", "ecosystem": "PyPI", "purl": "pkg:pypi/werkzeug"},
                "ranges": [
                    {
                        "type": "GIT",
                        "repo": "https://github.com/pallets/werkzeug",
                        "events": [
                            {"introduced": "0"},
                            {"fixed": "f3c803b3ade485a45f12b6d6617595350c0f03e2"},
                        ],
                    },
                    {
                        "type": "ECOSYSTEM",
                        "events": [
                            {"introduced": "0"},
                            {"fixed": "2.3.8"},
                            {"introduced": "3.0.0"},
                            {"fixed": "3.0.1"},
                        ],
                    },
                ],
                "versions": ["2.2.2", "2.2.3", "2.3.7", "3.0.0"],
            }
        ],
        "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"}],
    },
    # no severity anywhere in the record, as for most PyPA advisories
    "django/PYSEC-2019-13.yaml": {
        "id": "PYSEC-2019-13",
        "details": "SQL injection in Django's key and index lookups for JSONField/HStoreField.",
        "aliases": ["CVE-2019-14234", "GHSA-6r97-cj55-9hrq"],
        "modified": "2021-06-10T06:51:42.040738Z",
        "published": "2019-08-09T13:15:00Z",
        "affected": [
            {
                "package": {"name": "django", "ecosystem": "PyPI", "purl": "pkg:pypi/django"},
                "ranges": [
                    {
                        "type": "ECOSYSTEM",
                        "events": [
                            {"introduced": "2.1"},
                            {"fixed": "2.1.11"},
                            {"introduced": "1.11"},
                            {"fixed": "1.11.23"},
                            {"introduced": "2.2"},
                            {"fixed": "2.2.4"},
                        ],
                    }
                ],
            }
        ],
    },
    # synthetic (no shared record has one yet): an OSV record whose only rating is a CVSS v4 vector
    "requests/GARRISON-TEST-CVSS4.yaml": {
        "id": "GARRISON-TEST-CVSS4",
        "summary": "Test record: OSV format, rated by a CVSS v4 vector only",
        "aliases": [],
        "modified": "2024-06-10T17:00:00Z",
        "affected": [
            {
                "package": {"name": "requests", "ecosystem": "PyPI"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.32.0"}]}],
            }
        ],
        "severity": [
            {"type": "CVSS_V4", "score": "CVSS:4.0/AV:L/AC:H/AT:P/PR:H/UI:N/VC:H/VI:H/VA:N/SC:N/SI:N/SA:N"}
        ],
    },
}

GO: dict[str, dict[str, Any]] = {
    "GO-2023-2102.json": {
        "schema_version": "1.3.1",
        "id": "GO-2023-2102",
        "modified": "0001-01-01T00:00:00Z",
        "published": "0001-01-01T00:00:00Z",
        "aliases": ["CVE-2023-39325", "GHSA-4374-p667-p6c8"],
        "related": ["CVE-2023-44487"],
        "summary": "HTTP/2 rapid reset can cause excessive work in net/http",
        "affected": [
            {
                "package": {"name": "stdlib", "ecosystem": "Go"},
                "ranges": [
                    {
                        "type": "SEMVER",
                        "events": [
                            {"introduced": "0"},
                            {"fixed": "1.20.10"},
                            {"introduced": "1.21.0-0"},
                            {"fixed": "1.21.3"},
                        ],
                    }
                ],
            },
            {
                "package": {"name": "golang.org/x/net", "ecosystem": "Go"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "0.17.0"}]}],
            },
        ],
        "database_specific": {"url": "https://pkg.go.dev/vuln/GO-2023-2102", "review_status": "REVIEWED"},
    }
}


def _gem(gem: str, cve: str, ghsa: str, title: str, date: str, patched: list[str], **cvss: float) -> str:
    doc: dict[str, Any] = {"gem": gem, "cve": cve, "ghsa": ghsa, "title": title, "date": date}
    doc.update(cvss)
    doc["patched_versions"] = patched
    return "---\n" + yaml.safe_dump(doc, sort_keys=False)


RUBYSEC: dict[str, str] = {
    "resque/CVE-2023-50725.yml": _gem(
        "resque",
        "2023-50725",
        "gc3j-vvwf-4rp8",
        "Resque vulnerable to reflected XSS",
        "2023-12-18",
        [">= 2.2.1"],
        cvss_v3=6.3,
    ),
    # two gems share each of these CVEs: all of them must survive the import
    "nokogiri/CVE-2019-5477.yml": _gem(
        "nokogiri",
        "2019-5477",
        "cr5j-953j-xw5p",
        "Nokogiri Command Injection Vulnerability",
        "2019-08-11",
        [">= 1.10.4"],
        cvss_v2=7.5,
        cvss_v3=9.8,
    ),
    "rexical/CVE-2019-5477.yml": _gem(
        "rexical",
        "2019-5477",
        "cr5j-953j-xw5p",
        "Rexical Command Injection Vulnerability",
        "2019-08-11",
        [">= 1.0.7"],
        cvss_v2=7.5,
        cvss_v3=9.8,
    ),
    "nokogiri/CVE-2018-8048.yml": _gem(
        "nokogiri",
        "2018-8048",
        "x7rv-cr6v-4vm4",
        "Revert libxml2 behavior in Nokogiri gem",
        "2018-03-29",
        [">= 1.8.3"],
        cvss_v3=6.1,
    ),
    "loofah/CVE-2018-8048.yml": _gem(
        "loofah",
        "2018-8048",
        "x7rv-cr6v-4vm4",
        "Loofah XSS Vulnerability",
        "2018-03-16",
        [">= 2.2.1"],
        cvss_v3=6.1,
    ),
    "ruby-saml/CVE-2024-45409.yml": _gem(
        "ruby-saml",
        "2024-45409",
        "jw9c-mfg7-9rx2",
        "SAML authentication bypass via Incorrect XPath selector",
        "2024-08-28",
        ["~> 1.12.3", ">= 1.17.0"],
        cvss_v3=10.0,
        cvss_v4=9.9,
    ),
    "omniauth-saml/CVE-2024-45409.yml": _gem(
        "omniauth-saml",
        "2024-45409",
        "cvp8-5r8g-fhvq",
        "omniauth-saml vulnerable to Improper Verification of Cryptographic Signature",
        "2024-09-11",
        [">= 1.10.5, < 2.0.0", "~> 2.1.2", ">= 2.2.1"],
        cvss_v3=10.0,
    ),
}


def _npm(
    num: int,
    module: str,
    vulnerable: str,
    patched: str | None,
    cves: list[str],
    vector: str,
    score: float,
    title: str,
    updated: str,
) -> dict[str, Any]:
    return {
        "id": num,
        "created_at": updated,
        "updated_at": updated,
        "title": title,
        "author": {"name": "", "website": None, "username": None},
        "module_name": module,
        "publish_date": updated,
        "cves": cves,
        "vulnerable_versions": vulnerable,
        "patched_versions": patched,
        "overview": title,
        "recommendation": "Update.",
        "references": [],
        "cvss_vector": vector,
        "cvss_score": score,
        "coordinating_vendor": None,
    }


NODE_NPM: dict[str, dict[str, Any]] = {
    "368.json": _npm(
        368,
        "lodash",
        "<4.17.5",
        ">=4.17.5",
        ["CVE-2018-3721"],
        "CVSS:3.0/AV:L/AC:H/PR:H/UI:R/S:U/C:N/I:N/A:L",
        2.5,
        "Prototype Pollution",
        "2018-02-12",
    ),
    "493.json": _npm(
        493,
        "lodash",
        "<4.17.11",
        ">=4.17.11",
        ["CVE-2018-16487"],
        "CVSS:3.0/AV:L/AC:L/PR:N/UI:N/S:C/C:L/I:L/A:N",
        7.0,
        "Prototype Pollution",
        "2019-01-03",
    ),
    # spaces after operators and a double space: node-semver accepts both
    "77.json": _npm(
        77,
        "hawk",
        "< 3.1.3  || >= 4.0.0 <4.1.1",
        ">=3.1.3 < 4.0.0 || >=4.1.1",
        ["CVE-2016-2515"],
        "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L",
        5.3,
        "Regular Expression DoS",
        "2016-04-21",
    ),
    "35.json": _npm(
        35,
        "serve-static",
        "<1.6.5 || >=1.7.0 <1.7.2",
        "~1.6.5 || >=1.7.2",
        ["CVE-2015-1164"],
        "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:L/A:N",
        5.3,
        "Open redirect",
        "2016-04-28",
    ),
    "311.json": _npm(
        311,
        "node-serialize",
        "<=99.999.99999",
        "<0.0.0",
        [],
        "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        9.8,
        "Code Execution through IIFE",
        "2017-02-09",
    ),
    "330.json": _npm(
        330,
        "jquery",
        "=3.0.0-rc.1",
        ">=3.0.0",
        ["CVE-2016-10707"],
        "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L",
        5.3,
        "Denial of Service",
        "2017-04-14",
    ),
    "410.json": _npm(
        410,
        "mongo-express",
        "<=0.40.0",
        None,
        [],
        "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        9.8,
        "Remote code execution",
        "2018-03-24",
    ),
}

NODE_CORE: dict[str, dict[str, Any]] = {
    "158.json": {
        "cve": ["CVE-2025-55132"],
        "vulnerable": "20.x || 22.x || 24.x || 25.x",
        "patched": "^20.20.0 || ^22.22.0 || ^24.13.0 || ^25.3.0",
        "ref": "https://nodejs.org/en/blog/vulnerability/december-2025-security-releases",
        "description": "fs.futimes() Bypasses Read-Only Permission Model",
        "overview": "futimes() changes timestamps without write permission.",
        "affectedEnvironments": ["all"],
        "severity": "low",
    },
    "18.json": {
        "cve": ["CVE-2016-5325"],
        "ref": "https://github.com/nodejs/node-private/pull/60",
        "vulnerable": "6.x || 4.x || 5.x",
        "patched": "^6.7.0 || ^4.6.0",
        "description": "HTTP processing security defect (CVE-2016-5325)",
        "cvss": "3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:L/I:L/A:N",
        "cvss_score": 4.8,
        "overview": "reason argument to writeHead() not validated: response splitting.",
        "affectedEnvironments": ["all"],
        "severity": "medium",
    },
    "163.json": {
        "cve": ["CVE-2026-21637"],
        "vulnerable": "20.x || 22.x || 24.x || 25.x",
        "patched": "^20.20.2 || ^22.22.2 || ^24.14.1 || ^25.8.2",
        "ref": "https://nodejs.org/en/blog/vulnerability/march-2026-security-releases",
        "description": "loadSNI() in _tls_wrap.js lacks try/catch leading to Remote DoS",
        "overview": "SNICallback exceptions crash the process.",
        "affectedEnvironments": ["all"],
        "severity": "high",
    },
}


def write_advisory_tree(root: Path) -> Path:
    """Write every fixture under `root` in the shared folder's layout; returns `root`."""
    for rel, doc in PYPA.items():
        p = root / "pypa-advisory-db-vulns" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
    for rel, doc in GO.items():
        p = root / "go-vulndb-osv" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(doc, indent=2))
    for rel, text in RUBYSEC.items():
        p = root / "rubysec-advisory-db-gems" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for sub, docs in (("npm", NODE_NPM), ("core", NODE_CORE)):
        d = root / "nodejs-security-wg" / "vuln" / sub
        d.mkdir(parents=True, exist_ok=True)
        for rel, doc in docs.items():
            (d / rel).write_text(json.dumps(doc, indent=2))
        # like the real folder: an index.json repeating every advisory by number
        index = {rel[:-5]: doc for rel, doc in docs.items()}
        (d / "index.json").write_text(json.dumps(index, indent=2))
    return root


def shared_or_skip() -> Path:
    """The whole shared advisory tree, for the few whole-tree checks that CI runs beside ../shared."""
    import pytest

    if not VULNDB.is_dir():
        pytest.skip(f"whole-tree check: shared advisory data not found at {VULNDB}")
    return VULNDB
