"""Console PKI: the CA the console generates, its server certificate, and per-defender client certificates."""

from garrison.pki.ca import (
    CertificateAuthority,
    client_ssl_context,
    ensure_ca,
    make_key_and_csr,
    server_ssl_context,
)

__all__ = [
    "CertificateAuthority",
    "client_ssl_context",
    "ensure_ca",
    "make_key_and_csr",
    "server_ssl_context",
]
