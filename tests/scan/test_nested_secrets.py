"""Secrets and malware inside jars, wars, zips and archives nested in them; the new secret detectors
(AWS secret access keys without AKIA, GitHub fine-grained tokens, .env credentials) and their false
positives measured on the real package files installed in this environment."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from garrison.scan.envfile import env_credentials
from garrison.scan.malware import MalwareScanner, load_yara
from garrison.scan.report import render
from garrison.scan.scanner import ScanOptions, scan
from garrison.scan.secrets import scan_secrets, secret_candidate
from tests.scan.helpers import make_droplet, pom

# the EICAR test string, assembled so this file itself is not a test virus
EICAR = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*").encode()
AWS_SECRET = "q8Vh3kR2mZ7pL0xWb5NcT1yJf4GdS9aE6uKiOo+/"  # 40 base64 characters, not a real key
AWS_ID = "AKIAQ3EGRV7HNBZ4XW2M"
PAT = (
    "github_pat_11ABCDEFG0123456789abc_"
    + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0EdCbA9z8y7X6w5V4u3T2s1R0q9P8o"  # 22 + 59
)


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def droplet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config_jar = _zip(
        {
            **pom("com.example", "shop-config", "1.4.2"),
            "application.properties": f"spring.datasource.url=jdbc:postgresql://db/shop\naws.accessKeyId={AWS_ID}\n",
            "META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\n",
        }
    )
    inner_zip = _zip(
        {"deploy/.env": "DATABASE_URL=postgres://shop:Pg-s3cret-42@db:5432/shop\n", "eicar.com": EICAR}
    )
    war = _zip(
        {
            "WEB-INF/classes/bundle.zip": inner_zip,
            "WEB-INF/lib/lib.jar": _zip(
                {"test/fixture.pem": b"AKIAIOSFODNN7EXAMPLE\n"}
            ),  # a library's fixture
            **pom("com.example", "shop", "2.0.0"),
        }
    )
    return make_droplet(
        tmp_path_factory.mktemp("nested") / "d.tgz",
        {
            "app/lib/config.jar": config_jar,
            "app/shop.war": war,
            "app/downloads/eicar.zip": _zip({"eicar.com": EICAR}),
            "app/main.py": "print('hi')\n",
        },
    )


@pytest.fixture(scope="module")
def malware(tmp_path_factory: pytest.TempPathFactory) -> MalwareScanner:
    rules = tmp_path_factory.mktemp("yara")
    (rules / "eicar.yar").write_text(
        'rule Eicar { strings: $a = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE" condition: $a }\n'
    )
    return MalwareScanner({hashlib.sha256(EICAR).hexdigest(): "eicar"}, load_yara(rules))


def test_secrets_inside_nested_archives(droplet: Path) -> None:
    report = scan(droplet, ScanOptions())
    found = {(s.kind, s.path, s.line) for s in report.secrets}
    assert ("AWS Access Key", "app/lib/config.jar!/application.properties", 2) in found
    assert ("URL with password in .env", "app/shop.war!/WEB-INF/classes/bundle.zip!/deploy/.env", 1) in found
    assert not any("WEB-INF/lib" in p for _, p, _ in found)  # library jars: dependency tree
    sarif = json.loads(render(report, "sarif"))
    res = next(r for r in sarif["runs"][0]["results"] if ".env" in json.dumps(r["locations"]))
    loc = res["locations"][0]
    assert loc["physicalLocation"]["artifactLocation"]["uri"] == "app/shop.war"
    assert loc["logicalLocations"][0]["fullyQualifiedName"].endswith("bundle.zip!/deploy/.env")


def test_malware_inside_deflated_and_nested_archives(droplet: Path, malware: MalwareScanner) -> None:
    report = scan(droplet, ScanOptions(malware=malware, secrets=False))
    hits = {(m.path, m.rule) for m in report.malware}
    for path in ("app/downloads/eicar.zip!/eicar.com", "app/shop.war!/WEB-INF/classes/bundle.zip!/eicar.com"):
        assert (path, "hash:eicar") in hits and (path, "yara:eicar.Eicar") in hits
    # the outer files themselves hold only deflated bytes: nothing matched there
    assert not any(p in ("app/downloads/eicar.zip", "app/shop.war") for p, _ in hits)


def test_nesting_depth_members_and_zip_bombs_bounded(tmp_path: Path) -> None:
    deep = _zip({"secret.env": b"API_TOKEN=Zq8Vh3kR2mZ7pL0x\n"})
    for i in range(6):
        deep = _zip({f"level{i}.zip": deep})
    bomb = _zip({"zeros.bin": bytes(48 << 20), "ok.env": b"DB_PASSWORD=Pg-s3cret-42\n"})
    d = make_droplet(tmp_path / "d.tgz", {"app/deep.zip": deep, "app/bomb.zip": bomb})
    report = scan(d, ScanOptions())
    notes = " | ".join(f"{n.path}: {n.message}" for n in report.notices)
    assert "nested deeper than 4 levels" in notes
    assert "zeros.bin: skipped: compression ratio above 200:1" in notes
    assert [s.path for s in report.secrets] == ["app/bomb.zip!/ok.env"]  # the rest still scanned


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        (
            "home/.aws/credentials",
            f"[default]\naws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_SECRET}\n",
            "AWS Secret Access Key",
        ),
        ("app/config.yml", f"aws:\n  secret_access_key: {AWS_SECRET}\n", "AWS Secret Access Key"),
        ("app/creds.json", json.dumps({"SecretAccessKey": AWS_SECRET}), "AWS Secret Access Key"),
        ("app/settings.py", f'AWS_SECRET_ACCESS_KEY = "{AWS_SECRET}"\n', "AWS Secret Access Key"),
        ("app/.env", f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}\n", "AWS Secret Access Key"),
        ("app/deploy.sh", f"export GH_TOKEN={PAT}\n", "GitHub Fine-grained Token"),
        ("app/.env", "DB_PASSWORD='hunter22'\n", "Password in .env"),
        ("app/.env.production", "STRIPE_SECRET=sk_test_abcdefghijkl\n", "Secret in .env"),
        ("app/prod.env", "DATABASE_URL=mysql://app:Wx7-9qq@db/shop\n", "URL with password in .env"),
        ("app/.envrc", 'export API_TOKEN="tok_9f8e7d6c5b4a"\n', "Secret in .env"),
    ],
)
def test_new_detectors(name: str, text: str, kind: str) -> None:
    found = scan_secrets(name, text.encode())
    assert [f.kind for f in found if f.kind != "AWS Access Key"] == [kind]
    assert AWS_SECRET not in json.dumps([f.model_dump() for f in found]) and PAT not in str(found)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("app/.env.example", "DB_PASSWORD=hunter22\n"),
        ("app/.env", "PASSWORD_MIN_LENGTH=12\nSECRET_KEY=${SECRET_KEY}\nAPI_TOKEN=your_token_here\n"),
        (
            "app/.env",
            "DB_PASSWORD=\nREDIS_URL=redis://localhost:6379/0\nJWT_SECRET=<generate>\nTOKEN=changeme\n",
        ),
        ("app/.env", "DATABASE_URL=postgres://user:${DB_PASS}@db/app\nSESSION_SECRET=xxxxxxxx\n"),
        ("app/aws.py", "aws_secret_access_key = os.environ['AWS_SECRET_ACCESS_KEY']\n"),
        ("app/aws.py", "AWS_SECRET_KEY_LENGTH = 'abcdefghijabcdefghijabcdefghijabcdefghij'\n"),
        ("app/readme.md", "Create a token starting with github_pat_ in your settings.\n"),
    ],
)
def test_no_false_positives_on_templates_and_placeholders(name: str, text: str) -> None:
    assert scan_secrets(name, text.encode()) == []


NEW_KINDS = {
    "AWS Secret Access Key",
    "GitHub Fine-grained Token",
    "Password in .env",
    "Secret in .env",
    "URL with password in .env",
}


def test_false_positives_on_real_package_files() -> None:
    """Every installed Python package's files (this environment's site-packages: real third-party
    code, docs, test fixtures and config) hold no credentials: the new detectors must stay silent."""
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    files, new = 0, []
    for path in site.rglob("*"):
        if not path.is_file() or path.is_symlink() or path.stat().st_size > 4 << 20:
            continue
        rel = path.relative_to(site).as_posix()
        if not secret_candidate(rel, include_deps=True):
            continue
        files += 1
        new += [
            f"{s.kind} {rel}:{s.line}" for s in scan_secrets(rel, path.read_bytes()) if s.kind in NEW_KINDS
        ]
    assert files > 5000
    assert new == []


def test_env_parser_handles_comments_quotes_and_export() -> None:
    text = '# comment\nexport DB_PASSWORD="p@ss w0rd"  \nAPI_KEY=abc123def456 # trailing comment\n'
    assert [(n, k) for n, k, _ in env_credentials(text)] == [(2, "Password in .env"), (3, "Secret in .env")]


def _tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_gems_and_tarballs_inside_a_droplet(tmp_path: Path, malware: MalwareScanner) -> None:
    """A .gem is a plain tar holding data.tar.gz: members at both levels are checked; a zero bomb
    tarball is cut off in its first window and the rest of the droplet is still scanned."""
    gem = _tar_bytes(
        {
            "metadata.gz": gzip.compress(
                b"--- !ruby/object:Gem::Specification\nname: shopkit\nversion: 1.2.0\n"
            ),
            "data.tar.gz": _tar_bytes(
                {"lib/shopkit.rb": b"module Shopkit; end\n", "lib/payload.bin": EICAR}, "w:gz"
            ),
        }
    )
    app_tgz = _tar_bytes({"./config/.env": b"DB_PASSWORD=Pg-s3cret-42\n"}, "w:gz")
    bomb = _tar_bytes({"zeros.bin": bytes(64 << 20)}, "w:gz")
    d = make_droplet(
        tmp_path / "d.tgz",
        {
            "app/vendor/cache/shopkit-1.2.0.gem": gem,
            "app/releases/app.tgz": app_tgz,
            "app/releases/bomb.tgz": bomb,
            "app/log/access.log.gz": gzip.compress(b"GET / 200\n" * 1000),
        },
    )
    report = scan(d, ScanOptions(malware=malware))
    hits = {(m.path, m.rule) for m in report.malware}
    assert ("app/vendor/cache/shopkit-1.2.0.gem!/data.tar.gz!/lib/payload.bin", "hash:eicar") in hits
    assert [(s.kind, s.path) for s in report.secrets] == [
        ("Password in .env", "app/releases/app.tgz!/config/.env")
    ]
    notes = " | ".join(f"{n.path}: {n.message}" for n in report.notices)
    assert "app/releases/bomb.tgz: archive not scanned further" in notes and "ratio above 200:1" in notes
    assert "access.log.gz" not in notes  # a compressed log is not taken for an archive
