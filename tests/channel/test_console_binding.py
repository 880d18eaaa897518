"""Cached identity and policy are bound to the console CA of the install bundle (issue 10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.channel.bundle import decode_bundle, encode_bundle
from garrison.channel.client import SPOOL_FILE, DefenderChannelClient
from garrison.channel.credentials import ca_fingerprint, issued_by, load_credentials, save_credentials
from garrison.channel.policy_cache import (
    CACHE_FILE,
    ForeignPolicyCache,
    load_cached_policy,
    save_cached_policy,
)
from garrison.channel.protocol import Hello
from garrison.channel.spool import EventSpool
from garrison.pki.ca import CertificateAuthority, ensure_ca, make_key_and_csr
from garrison.policy.audit import AuditEvent
from garrison.policy.model import Rule, RuntimePolicy


def _enrolled(ca: CertificateAuthority, folder: Path) -> bytes:
    key, csr = make_key_and_csr("app-0")
    save_credentials(folder, key, ca.sign_defender_csr(csr, "app-0"))
    return key


def _client(ca: CertificateAuthority, folder: Path) -> DefenderChannelClient:
    bundle = decode_bundle(
        encode_bundle(ca_pem=ca.cert_pem, ws_address="wss://127.0.0.1:9", enrolment_token="t")
    )
    return DefenderChannelClient(bundle, folder, Hello(defender_id="app-0", version="test"))


def test_issuer_check_and_cache_binding(tmp_path: Path) -> None:
    a, b = ensure_ca(tmp_path / "a"), ensure_ca(tmp_path / "b")
    fa, fb = ca_fingerprint(a.cert_pem), ca_fingerprint(b.cert_pem)
    assert fa != fb and len(fa) == 64
    _enrolled(a, tmp_path / "d")
    creds = load_credentials(tmp_path / "d")
    assert creds is not None
    assert issued_by(creds.cert_pem, a.cert_pem) and not issued_by(creds.cert_pem, b.cert_pem)
    assert not issued_by(a.cert_pem, b.cert_pem) and not issued_by(b"garbage", a.cert_pem)

    pol = RuntimePolicy(rules=[Rule(name="r")], revision=3)
    save_cached_policy(tmp_path, pol, console_ca=fa)
    assert load_cached_policy(tmp_path, console_ca=fa) == pol
    with pytest.raises(ForeignPolicyCache, match="another console"):
        load_cached_policy(tmp_path, console_ca=fb)
    # written before caches were bound: only with proof that the folder is this console's
    (tmp_path / CACHE_FILE).write_text(pol.model_dump_json())
    assert load_cached_policy(tmp_path, console_ca=fa, accept_unbound=True) == pol
    with pytest.raises(ForeignPolicyCache, match="not bound"):
        load_cached_policy(tmp_path, console_ca=fa, accept_unbound=False)


def test_client_sets_another_consoles_state_aside(tmp_path: Path) -> None:
    a, b = ensure_ca(tmp_path / "a"), ensure_ca(tmp_path / "b")
    data = tmp_path / "data"
    key_a = _enrolled(a, data)
    save_cached_policy(data, RuntimePolicy(revision=1), console_ca=ca_fingerprint(a.cert_pem))
    spool = EventSpool(data / SPOOL_FILE)
    spool.append([AuditEvent(id="meant-for-a", type="process", effect="alert")])
    spool.close()

    same = _client(a, data)  # same console: nothing moves
    assert same.identity_verified and not same.identity_note and same.defender_id == "app-0"
    assert same.spool.pending() == 1
    same.spool.close()

    other = _client(b, data)
    assert not other.identity_verified and other.defender_id == ""
    assert "issued by another console" in other.identity_note
    assert other.spool.pending() == 0  # A's events are not sent to B
    other.spool.close()
    aside = [p for p in data.iterdir() if p.name.startswith("previous-console-")]
    assert len(aside) == 1 and aside[0].stat().st_mode & 0o777 == 0o700
    assert (aside[0] / "defender-key.pem").read_bytes() == key_a
    assert EventSpool(aside[0] / SPOOL_FILE).pending() == 1
    assert not (data / CACHE_FILE).exists() and load_credentials(data) is None


@pytest.mark.anyio
async def test_certificate_rejected_by_the_console_means_a_new_key(tmp_path: Path) -> None:
    """A console (its server certificate from the bundle's CA) that does not accept our client
    certificate at the TLS layer: the client says so and enrols again with a new key."""
    import asyncio

    from websockets.asyncio.server import serve

    from garrison.pki.ca import server_ssl_context

    bundle_ca, other = ensure_ca(tmp_path / "x"), ensure_ca(tmp_path / "y")
    cert, key = bundle_ca.issue_server_cert(tmp_path / "x", ["127.0.0.1"])
    # verifies client certificates against another CA: ours is refused in the handshake
    ctx = server_ssl_context(cert, key, client_ca_pem=other.cert_pem, client_cert="optional")
    data = tmp_path / "data"
    key_a = _enrolled(bundle_ca, data)
    enrolments: list[str] = []

    async def handler(ws: object) -> None:
        enrolments.append(str(await ws.recv()))  # type: ignore[attr-defined]

    async with serve(handler, "127.0.0.1", 0, ssl=ctx) as server:
        port = server.sockets[0].getsockname()[1]
        bundle = decode_bundle(
            encode_bundle(ca_pem=bundle_ca.cert_pem, ws_address=f"wss://127.0.0.1:{port}", enrolment_token="t")
        )
        client = DefenderChannelClient(
            bundle, data, Hello(defender_id="app-0", version="test"), backoff_base=0.01, backoff_max=0.05
        )
        assert client.identity_verified
        task = asyncio.create_task(client.run())
        for _ in range(500):
            if enrolments:
                break
            await asyncio.sleep(0.02)
        await client.aclose()
        await task
        client.spool.close()
    assert "rejected this defender's certificate" in client.identity_note, client.last_error
    assert enrolments and '"type":"enrol"' in enrolments[0].replace(" ", "")
    assert load_credentials(data) is None or (data / "defender-key.pem").read_bytes() != key_a


def test_cell_defender_start_up_decisions_are_audited(tmp_path: Path) -> None:
    from garrison.cell.cli import startup_decisions
    from garrison.cell.console import CellConsoleLink

    a, b = ensure_ca(tmp_path / "a"), ensure_ca(tmp_path / "b")
    data = tmp_path / "cell"
    _enrolled(a, data)
    bundle_b = decode_bundle(
        encode_bundle(ca_pem=b.cert_pem, ws_address="wss://127.0.0.1:9", enrolment_token="t")
    )
    link = CellConsoleLink(bundle_b, data, host="cell-1")
    got = dict(startup_decisions(link, no_policy=True))
    assert "issued by another console" in got["identity.foreign"]
    assert "nothing is enforced" in got["policy.none"]
    link.client.spool.close()
    assert startup_decisions(None, no_policy=False) == []
