"""Start-up behaviour: first-start credentials, restart, bad options, expired certificates."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from garrison.channel import protocol as p
from garrison.pki import client_ssl_context, ensure_ca
from garrison.pki.ca import DEFENDER_OU


def test_restart_keeps_state_and_never_reprints_password(console_factory):
    c = console_factory()
    assert c.admin_password and "password:" in c.log()
    saved = c.put_policy({"rules": [{"name": "keep-me"}]})
    c.restart()
    assert c.log().count("password:") == 1  # only the first start printed it
    assert c.policy() == saved
    assert c.put_policy({"rules": []})["revision"] == saved["revision"] + 1
    info = json.loads((c.data_dir / "console.json").read_text())
    assert info["url"] == c.url and info["ws_address"] == c.ws_address
    c.stop()
    assert not (c.data_dir / "console.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--db", "mysql://x/y"], "unsupported database"), (["--db", "::nonsense::"], "not a database URL")],
)
def test_bad_options_exit_with_a_clear_message(tmp_path, args, message):
    r = subprocess.run(
        [sys.executable, "-m", "garrison", "console", "--data-dir", str(tmp_path), "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_expired_defender_certificate_is_refused(console):
    ca = ensure_ca(console.data_dir)  # the console's own CA (test-only access to its key)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "expired-defender"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, DEFENDER_OU),
                ]
            )
        )
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(ca.key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    async def attempt() -> None:
        from websockets.asyncio.client import connect

        ctx = client_ssl_context(console.ca_pem.encode(), cert_pem=cert_pem, key_pem=key_pem)
        async with connect(console.ws_address, ssl=ctx) as conn:
            await conn.send(p.dump(p.Hello()))
            await asyncio.wait_for(conn.recv(), 10)

    with pytest.raises((ssl.SSLError, ConnectionClosed, InvalidHandshake, OSError)):
        asyncio.run(attempt())
    with console.api() as c:
        assert c.get("/defenders/expired-defender").status_code == 404
