"""End-to-end: a droplet with pinned vulnerable packages, a planted key and malware, real advisories."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.schema._res import BOM_JSON_STRICT

from garrison.scan.assurance import AssurancePolicy
from garrison.scan.malware import MalwareScanner, load_hashes, load_yara
from garrison.scan.model import ScanReport
from garrison.scan.report import render
from garrison.scan.scanner import ScanOptions, scan
from tests.scan.helpers import dist_info, go_binary_inline, go_modinfo, make_droplet

AWS_KEY = "AKIAIOSFODNN7EXAMPLX"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIICXAIBAAKBgQCqGKukO1De7zhZj6+H0qtjTkVxwTCpvKe4eCZ0FPqri0cb2JZfXJ/DgYSF6vUp\n"
    "-----END RSA PRIVATE KEY-----\n"
)
GCP = json.dumps(
    {"type": "service_account", "project_id": "p", "private_key_id": "k", "private_key": PEM}, indent=2
)
EVIL = b"MZ-this-is-a-dropper-sample-with-marker-GARRISON_EVIL_MARKER"


@pytest.fixture(scope="module")
def droplet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("droplet")
    files: dict[str, bytes | str] = {
        **dist_info("Werkzeug", "2.2.2"),
        **dist_info("requests", "2.32.3"),
        "app/requirements.txt": "werkzeug==2.2.2\nrequests==2.32.3\n",
        "app/Gemfile.lock": "GEM\n  remote: https://rubygems.org/\n  specs:\n    resque (2.2.0)\n\n",
        "app/bin/server.bin": go_binary_inline(
            "go1.20.1", go_modinfo("example.com/srv", [("golang.org/x/net", "v0.7.0")])
        ),
        "app/config/settings.py": f'AWS_ACCESS_KEY_ID = "{AWS_KEY}"\n',
        "app/config/sa.json": GCP,
        "app/tools/dropper.exe": EVIL,
        "staging_info.yml": "detected_buildpack: python\n",
    }
    return make_droplet(d / "droplet.tgz", files)


@pytest.fixture(scope="module")
def report(droplet: Path, advisory_db: Path, tmp_path_factory: pytest.TempPathFactory) -> ScanReport:
    ind = tmp_path_factory.mktemp("ind")
    (ind / "hashes.txt").write_text(f"# known bad\n{hashlib.sha256(EVIL).hexdigest()}  dropper.exe\n")
    (ind / "rules").mkdir()
    (ind / "rules" / "evil.yar").write_text(
        'rule EvilMarker { strings: $a = "GARRISON_EVIL_MARKER" condition: $a }\n'
    )
    mal = MalwareScanner(load_hashes(ind / "hashes.txt"), load_yara(ind / "rules"))
    return scan(
        droplet,
        ScanOptions(
            db_dir=advisory_db,
            app_name="shop",
            malware=mal,
            policy=AssurancePolicy.model_validate({"thresholds": {"high": 0}}),
        ),
    )


def test_digest_is_sha256_of_the_file(droplet: Path, report: ScanReport) -> None:
    assert report.digest == "sha256:" + hashlib.sha256(droplet.read_bytes()).hexdigest()
    assert report.target_kind == "droplet" and report.app_name == "shop"


def test_vulnerabilities_from_real_advisories(report: ScanReport) -> None:
    ids = {(v.package, v.id) for v in report.vulnerabilities}
    assert ("Werkzeug", "PYSEC-2023-221") in ids
    assert ("resque", "CVE-2023-50725") in ids
    assert ("golang.org/x/net", "GO-2023-2102") in ids
    assert any(v.package == "stdlib" and v.version == "1.20.1" for v in report.vulnerabilities)
    assert not any(v.package == "requests" and v.id == "PYSEC-2023-74" for v in report.vulnerabilities)
    werk = [p for p in report.packages if p.name.lower() == "werkzeug"]
    assert len(werk) == 1 and len(werk[0].locations) == 2  # dist-info + requirements merged
    ids_all = [v.id for v in report.vulnerabilities if v.package == "Werkzeug"]
    assert len(ids_all) == len(set(ids_all))


def test_secrets_with_location_and_redacted_everywhere(report: ScanReport) -> None:
    kinds = {(s.kind, s.path, s.line) for s in report.secrets}
    assert ("AWS Access Key", "app/config/settings.py", 1) in kinds
    assert any(k == "GCP Service Account Key" and p == "app/config/sa.json" for k, p, _ in kinds)
    outputs = [render(report, f) for f in ("json", "sarif", "cyclonedx")]
    from io import StringIO

    from rich.console import Console

    from garrison.scan.report.table import print_table

    buf = StringIO()
    print_table(report, Console(file=buf, width=200))
    outputs.append(buf.getvalue())
    for text in outputs:
        assert AWS_KEY not in text and "MIICXAIBAAKBgQCqGKukO1De7zhZj6" not in text


def test_malware_by_hash_and_yara(report: ScanReport) -> None:
    rules = {(m.path, m.rule) for m in report.malware}
    assert ("app/tools/dropper.exe", "hash:dropper.exe") in rules
    assert ("app/tools/dropper.exe", "yara:evil.EvilMarker") in rules


def test_verdict_fails_with_reasons(report: ScanReport) -> None:
    assert report.verdict == "fail"
    text = " ".join(report.reasons)
    assert (
        "high vulnerabilities (allowed 0)" in text
        and "PYSEC-2023-221" in text
        and "secrets found" in text
        and "malware" in text
    )


def test_sarif_and_cyclonedx_shapes(report: ScanReport) -> None:
    sarif = json.loads(render(report, "sarif"))
    assert sarif["version"] == "2.1.0" and sarif["$schema"].endswith("sarif-schema-2.1.0.json")
    run = sarif["runs"][0]
    rule_ids = {r["id"] for r in run["tool"]["driver"]["rules"]}
    assert all(res["ruleId"] in rule_ids for res in run["results"])
    assert any(
        res["locations"][0]["physicalLocation"].get("region", {}).get("startLine") for res in run["results"]
    )
    bom_text = render(report, "cyclonedx")
    bom = json.loads(bom_text)
    assert bom["specVersion"] == "1.6" and bom["bomFormat"] == "CycloneDX"
    assert any(c.get("purl", "").startswith("pkg:pypi/werkzeug@2.2.2") for c in bom["components"])
    assert any(v["id"] == "PYSEC-2023-221" for v in bom["vulnerabilities"])
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    schema_path = Path(str(BOM_JSON_STRICT[SchemaVersion.V1_6]))

    def local(uri: str) -> object:  # the strict schema's $refs (spdx, jsf) ship next to it
        return json.loads((schema_path.parent / uri.rsplit("/", 1)[-1]).read_text())

    validator = jsonschema_rs.validator_for(json.loads(schema_path.read_text()), retriever=local)
    errors = [e.message for e in validator.iter_errors(bom)]
    assert errors == []


def test_json_round_trip(report: ScanReport) -> None:
    again = ScanReport.model_validate_json(render(report, "json"))
    assert again == report


def test_dependency_trees_skipped_for_secrets_unless_asked(tmp_path: Path) -> None:
    from tests.scan.helpers import write_tree

    write_tree(
        tmp_path,
        {
            "node_modules/lib/test/fixture.pem": PEM,
            "deps/0/python/lib/python3.11/site-packages/x/tests/key.pem": PEM,
            "app/key.pem": PEM,
            "app/logo.png": PEM,
        },
    )
    assert [s.path for s in scan(tmp_path, ScanOptions()).secrets] == ["app/key.pem"]
    assert len(scan(tmp_path, ScanOptions(secrets_in_deps=True)).secrets) == 3
