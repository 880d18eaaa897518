"""The console's deployment artefacts: the BOSH job rendered with Ruby's ERB as the director renders
it, the sample deployment manifest, and a console started from what the job renders — with an RSA CA
as CredHub generates one, shared through the environment as the job passes it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.console.defender_client import bundle_fields, deliver
from tests.fixtures.console import RunningConsole, fresh_pg_database

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "bosh" / "jobs" / "garrison-console"
RENDER = REPO / "tests" / "cell" / "bosh_render.rb"
needs_ruby = pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby (Debian package) not installed")


def _rsa_ca() -> tuple[str, str]:
    """A CA like CredHub's `type: certificate, is_ca: true` (RSA 2048)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Garrison Console CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


CA_CERT, CA_KEY = _rsa_ca()
PROPS = {
    "garrison": {
        "console": {
            "database_url": "postgresql://garrison:p'a$s w@pg.example.test:5432/garrison",
            "public_address": "garrison.example.test",
            "ca": {"certificate": CA_CERT, "private_key": CA_KEY},
            "ws_addresses": ["wss://10.0.1.5:8084", "wss://10.0.2.5:8084"],
        }
    }
}


def render(template: str, props: dict[str, Any] = PROPS) -> str:
    proc = subprocess.run(
        ["ruby", str(RENDER), str(JOB), template, json.dumps(props)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _env_of(rendered_env: str, tmp_path: Path) -> dict[str, str]:
    """Source the rendered env file (its CA files placed where the job puts them) and read it back."""
    config = tmp_path / "jobs" / "garrison-console" / "config"
    config.mkdir(parents=True)
    (config / "ca.pem").write_text(render("ca.pem.erb"))
    (config / "ca-key.pem").write_text(render("ca-key.pem.erb"))
    text = rendered_env.replace("/var/vcap/jobs/garrison-console/config", str(config))
    out = subprocess.run(
        ["bash", "-c", f"set -eu\n{text}\nenv -0"], capture_output=True, text=True, check=True, env={}
    ).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


@needs_ruby
def test_job_templates_render_and_the_ctl_starts_a_replica(tmp_path: Path) -> None:
    spec = yaml.safe_load((JOB / "spec").read_text())
    for template in spec["templates"]:
        assert (JOB / "templates" / template).is_file(), template
    ctl = render("console-ctl.erb")
    (tmp_path / "ctl").write_text(ctl)
    assert subprocess.run(["bash", "-n", str(tmp_path / "ctl")]).returncode == 0
    assert "/var/vcap/packages/garrison/bin/garrison" in ctl and "--public-address" in ctl
    monit = (JOB / "monit").read_text()
    assert "/var/vcap/sys/run/garrison-console/console.pid" in monit and "PIDFILE=$RUN/console.pid" in ctl

    env = _env_of(render("env.erb"), tmp_path)
    assert env["GARRISON_CONSOLE_DB"] == PROPS["garrison"]["console"]["database_url"]  # shell-quoted
    assert env["GARRISON_CONSOLE_PORT"] == "8083" and env["GARRISON_CONSOLE_DEFENDER_PORT"] == "8084"
    assert env["GARRISON_CONSOLE_CA_CERT"].strip() == CA_CERT.strip()
    assert env["GARRISON_CONSOLE_CA_KEY"].strip() == CA_KEY.strip()
    assert env["GARRISON_REPLICA_LEASE"] == "30.0"
    assert env["GARRISON_CONSOLE_WS_ADDRESSES"] == "wss://10.0.1.5:8084,wss://10.0.2.5:8084"
    assert env["GARRISON_TRUSTED_PROXIES"] == ""


@needs_ruby
def test_sample_manifest_uses_only_declared_properties() -> None:
    doc = yaml.safe_load((REPO / "bosh/manifests/console.yml").read_text())
    group = doc["instance_groups"][0]
    assert group["instances"] >= 2 and doc["update"]["max_in_flight"] == 1
    job = group["jobs"][0]
    assert job["name"] == "garrison-console"
    declared = set(yaml.safe_load((JOB / "spec").read_text())["properties"])

    def leaves(d: dict[str, Any], prefix: str) -> set[str]:
        out: set[str] = set()
        for k, v in d.items():
            name = f"{prefix}.{k}" if prefix else k
            out |= leaves(v, name) if isinstance(v, dict) else {name}
        return out

    assert leaves(job["properties"], "") <= declared
    assert doc["variables"][0]["options"]["is_ca"] is True


def test_console_runs_with_a_shared_rsa_ca_from_the_environment(tmp_path: Path) -> None:
    base = os.environ.get("GARRISON_TEST_PG_URL")
    if not base:
        pytest.skip("GARRISON_TEST_PG_URL is not set (scripts/test starts a PostgreSQL cluster and sets it)")
    db_url, drop = fresh_pg_database(base)
    env = {"GARRISON_CONSOLE_CA_CERT": CA_CERT, "GARRISON_CONSOLE_CA_KEY": CA_KEY}
    console = RunningConsole(tmp_path / "replica", db_url=db_url, env=env)
    try:
        console.start()
        assert console.ca_pem.strip() == CA_CERT.strip()
        assert (console.data_dir / "ca-key.pem").stat().st_mode & 0o077 == 0
        token = bundle_fields(console.install_bundle())["enrolment_token"]
        events = [{"id": "rsa-ca-event-1", "type": "process", "effect": "alert", "severity": "low"}]
        assert asyncio.run(deliver(console.ws_address, console.ca_pem, token, "rsa-ca-app", events)) == 1
        console.stop()
        # a data directory holding another CA is refused, not silently replaced
        other_cert, other_key = _rsa_ca()
        console.env = {"GARRISON_CONSOLE_CA_CERT": other_cert, "GARRISON_CONSOLE_CA_KEY": other_key}
        with pytest.raises(RuntimeError, match="holds another CA"):
            console.start()
    finally:
        console.stop()
        drop()
