"""The defender's enrolment result on disk: its private key and the certificate the console signed.

Both files are 0600 in the data folder. The defender id is the certificate's CN (the console decides
it), so there is no third file that could disagree with the certificate.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

KEY_FILE = "defender-key.pem"
CERT_FILE = "defender-cert.pem"


@dataclass(frozen=True)
class Credentials:
    defender_id: str
    key_pem: bytes
    cert_pem: bytes


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def cert_common_name(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ValueError("certificate has no common name")
    return str(names[0].value)


def load_credentials(data_folder: Path) -> Credentials | None:
    """The stored key + certificate, or None if either is missing or unreadable (→ enrol again)."""
    try:
        key = (data_folder / KEY_FILE).read_bytes()
        cert = (data_folder / CERT_FILE).read_bytes()
        return Credentials(cert_common_name(cert), key, cert)
    except (OSError, ValueError):
        return None


def save_credentials(data_folder: Path, key_pem: bytes, cert_pem: bytes) -> Credentials:
    data_folder.mkdir(parents=True, exist_ok=True)
    creds = Credentials(cert_common_name(cert_pem), key_pem, cert_pem)
    _write_private(data_folder / KEY_FILE, key_pem)
    _write_private(data_folder / CERT_FILE, cert_pem)
    return creds


def forget_credentials(data_folder: Path) -> None:
    for name in (KEY_FILE, CERT_FILE):
        (data_folder / name).unlink(missing_ok=True)


def ca_fingerprint(ca_pem: str | bytes) -> str:
    """SHA-256 of the console CA certificate (DER): what binds cached state to one console."""
    raw = ca_pem.encode() if isinstance(ca_pem, str) else ca_pem
    return hashlib.sha256(x509.load_pem_x509_certificate(raw).public_bytes(Encoding.DER)).hexdigest()


def issued_by(cert_pem: bytes, ca_pem: str | bytes) -> bool:
    """True if the console CA signed this certificate (issuer name and signature both checked)."""
    raw = ca_pem.encode() if isinstance(ca_pem, str) else ca_pem
    try:
        x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(
            x509.load_pem_x509_certificate(raw)
        )
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def issuer_name(cert_pem: bytes) -> str:
    """The issuer's name and key id: every console CA has the same name, the key id tells them apart."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return "(unreadable)"
    name = cert.issuer.rfc4514_string()
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        aki = None
    return f"{name}, key id {aki.hex()[:16]}…" if aki else name
