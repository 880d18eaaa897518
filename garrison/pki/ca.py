"""A small CA with the `cryptography` library.

Why our own CA: the console must work out of the box with TLS on (8083 API/UI, 8084 defenders) and
defenders must prove who they are with certificates from the install bundle's enrolment, without an
operator bringing a PKI. Keys are ECDSA P-256; files are written 0600 in the console's data dir.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
DEFENDER_OU = "garrison-defender"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    """EC P-256 when the console made it; RSA when given one (a CredHub-generated CA, shared by replicas)"""

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def _builder(self, subject: x509.Name, public_key: object, days: int) -> x509.CertificateBuilder:
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )

    def issue_server_cert(
        self, directory: Path, hostnames: list[str], *, name: str = "server", days: int = 825
    ) -> tuple[Path, Path]:
        """Write `<name>.pem`/`<name>-key.pem` for these DNS names/IPs unless a valid one already covers them."""
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
        if cert_path.exists() and key_path.exists():
            existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
            try:
                san = existing.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                have = {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
                    str(v) for v in san.get_values_for_type(x509.IPAddress)
                }
            except x509.ExtensionNotFound:
                have = set()
            if set(hostnames) <= have and existing.not_valid_after_utc > _now() + dt.timedelta(days=1):
                return cert_path, key_path
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for h in hostnames:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                alt.append(x509.DNSName(h))
        cert = (
            self._builder(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]), key.public_key(), days
            )
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path

    @staticmethod
    def csr_key_fingerprint(csr_pem: bytes) -> str:
        """Hex SHA-256 of the CSR's public key (SubjectPublicKeyInfo): what a defender id is bound to.

        Raises ValueError for an unparseable CSR or one whose self-signature does not verify (the
        requester must hold the private key of the key it asks a certificate for)."""
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise ValueError("CSR signature is invalid")
        return key_fingerprint(csr.public_key())

    def sign_defender_csr(self, csr_pem: bytes, defender_id: str, *, days: int = 365) -> bytes:
        """Issue a client certificate whose CN is the defender id the console decided, not what the CSR says."""
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise ValueError("CSR signature is invalid")
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, defender_id),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, DEFENDER_OU),
            ]
        )
        cert = (
            self._builder(subject, csr.public_key(), days)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)


def key_fingerprint(public_key: object) -> str:
    spki = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def ensure_ca(
    directory: Path, *, common_name: str = "Garrison Console CA", days: int = 3650
) -> CertificateAuthority:
    """Load the CA from `directory`, generating it on first start."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{key_path}: CA key is neither an EC nor an RSA key")
        return CertificateAuthority(cert, key)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertificateAuthority(cert, key)


def make_key_and_csr(common_name: str) -> tuple[bytes, bytes]:
    """A fresh key and CSR for a defender's enrolment: (key PEM, CSR PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def server_ssl_context(
    cert: Path, key: Path, *, client_ca_pem: bytes | None = None, client_cert: str = "none"
) -> ssl.SSLContext:
    """TLS server context; `client_cert` is 'none', 'optional' (enrolment allowed) or 'required' (mTLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if client_ca_pem is not None:
        ctx.load_verify_locations(cadata=client_ca_pem.decode())
        ctx.verify_mode = {
            "none": ssl.CERT_NONE,
            "optional": ssl.CERT_OPTIONAL,
            "required": ssl.CERT_REQUIRED,
        }[client_cert]
    return ctx


def client_ssl_context(
    ca_pem: bytes, *, cert_pem: bytes | None = None, key_pem: bytes | None = None, check_hostname: bool = True
) -> ssl.SSLContext:
    """TLS client context that trusts only the console CA (and presents a defender certificate if given)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = check_hostname
    ctx.load_verify_locations(cadata=ca_pem.decode())
    if cert_pem is not None and key_pem is not None:
        import tempfile

        # ssl wants files; keep them only as long as loading takes.
        with tempfile.TemporaryDirectory() as d:
            c, k = Path(d) / "c.pem", Path(d) / "k.pem"
            c.write_bytes(cert_pem)
            _write_private(k, key_pem)
            ctx.load_cert_chain(str(c), str(k))
    return ctx
