"""PKI round trip over a real TLS socket on loopback: server cert, mTLS with a defender certificate."""

import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from garrison.pki import client_ssl_context, ensure_ca, make_key_and_csr, server_ssl_context


def _serve_once(ctx: ssl.SSLContext, sock: socket.socket, seen: list[str]) -> None:
    conn, _ = sock.accept()
    try:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            peer = tls.getpeercert()
            seen.append(str(peer.get("subject") if peer else None))
            tls.sendall(b"ok")
    except (ssl.SSLError, OSError) as exc:
        seen.append(f"error:{exc}")


def test_ca_is_stable_and_mtls_works(tmp_path: Path) -> None:
    ca = ensure_ca(tmp_path)
    assert ensure_ca(tmp_path).cert == ca.cert  # loaded, not regenerated
    assert (tmp_path / "ca-key.pem").stat().st_mode & 0o077 == 0
    cert, key = ca.issue_server_cert(tmp_path, ["localhost", "127.0.0.1"])
    key_pem, csr_pem = make_key_and_csr("chosen-by-defender")
    client_cert = ca.sign_defender_csr(csr_pem, "defender-42")
    assert (
        x509.load_pem_x509_certificate(client_cert)
        .subject.rfc4514_string()
        .startswith("OU=garrison-defender")
    )

    sctx = server_ssl_context(cert, key, client_ca_pem=ca.cert_pem, client_cert="required")
    for present_cert, expect_ok in ((True, True), (False, False)):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        seen: list[str] = []
        t = threading.Thread(target=_serve_once, args=(sctx, srv, seen))
        t.start()
        cctx = client_ssl_context(
            ca.cert_pem,
            cert_pem=client_cert if present_cert else None,
            key_pem=key_pem if present_cert else None,
        )
        try:
            with (
                socket.create_connection(srv.getsockname()) as raw,
                cctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                data = tls.recv(2)
        except (ssl.SSLError, OSError):
            data = b""
        t.join(5)
        srv.close()
        if expect_ok:
            assert data == b"ok" and "defender-42" in seen[0]
        else:
            assert data == b"" and seen[0].startswith("error:")


def test_csr_from_other_ca_key_is_fine_but_foreign_cert_rejected(tmp_path: Path) -> None:
    ca = ensure_ca(tmp_path / "a")
    other = ensure_ca(tmp_path / "b")
    key_pem, csr_pem = make_key_and_csr("x")
    foreign = other.sign_defender_csr(csr_pem, "evil")
    cert, key = ca.issue_server_cert(tmp_path / "a", ["127.0.0.1"])
    sctx = server_ssl_context(cert, key, client_ca_pem=ca.cert_pem, client_cert="required")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    seen: list[str] = []
    t = threading.Thread(target=_serve_once, args=(sctx, srv, seen))
    t.start()
    with (
        pytest.raises((ssl.SSLError, OSError)),
        socket.create_connection(srv.getsockname()) as raw,
        client_ssl_context(ca.cert_pem, cert_pem=foreign, key_pem=key_pem).wrap_socket(
            raw, server_hostname="127.0.0.1"
        ) as tls,
    ):
        tls.recv(2)
        raise OSError("no data")
    t.join(5)
    srv.close()
    assert seen and seen[0].startswith("error:")
