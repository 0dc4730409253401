"""The certificates of ``cityiot run``'s TLS listener for vendors (docs/design.md §10).

A local platform has no certificate authority of its own, and a vendor trying TLS against it
needs one: ``local_tls`` makes a CA and a broker certificate for ``localhost`` and
``127.0.0.1`` under the run dir, and keeps them across runs (a vendor's device configured with
the CA keeps working). A production broker uses certificates the city issues instead
(docs/deployment.md, "TLS to the broker").
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
# Browsers and TLS libraries refuse server certificates valid for more than 825 days.
SERVER_DAYS = 825
# Renewed on start when it would expire within this: a run never starts on a dying one.
RENEW_BEFORE = dt.timedelta(days=30)
NAMES = ("localhost",)
ADDRESSES = ("127.0.0.1",)


@dataclass(frozen=True, slots=True)
class LocalTls:
    """PEM files: the CA vendors trust, the broker's certificate and its key (0600)."""

    ca: Path
    cert: Path
    key: Path


def local_tls(folder: Path) -> LocalTls:
    """The CA and broker certificate under ``folder``: those of an earlier run when still
    valid for a while, else new ones (a new CA too, when the CA is gone)."""
    tls = LocalTls(folder / "ca.pem", folder / "broker.pem", folder / "broker.key")
    if _still_good(tls):
        return tls
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca_key_path = folder / "ca.key"
    if tls.ca.exists() and ca_key_path.exists() and _valid(tls.ca):
        ca_cert = x509.load_pem_x509_certificate(tls.ca.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca_certificate(ca_key)
        _write(ca_key_path, _key_pem(ca_key), private=True)
        _write(tls.ca, ca_cert.public_bytes(serialization.Encoding.PEM))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _server_certificate(key, ca_key, ca_cert)
    _write(tls.key, _key_pem(key), private=True)
    _write(tls.cert, cert.public_bytes(serialization.Encoding.PEM))
    return tls


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _valid(path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - RENEW_BEFORE > _now()


def _still_good(tls: LocalTls) -> bool:
    return tls.key.exists() and _valid(tls.ca) and _valid(tls.cert)


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cityiot (local run)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(_name("cityiot local CA"))
        .issuer_name(_name("cityiot local CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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


def _server_certificate(
    key: ec.EllipticCurvePrivateKey, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> x509.Certificate:
    now = _now()
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ADDRESSES]
    return (
        x509.CertificateBuilder()
        .subject_name(_name(NAMES[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write through a temporary file renamed into place: never half a certificate."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(tmp, path)
