"""Certificates for tests: a self-signed pair, a private CA, and a server pair the CA signs.

Real X.509 made with `cryptography` (ECDSA P-256, SHA-256), written as PEM files, so a test can
install them with `sitemail tls set` and a client (or testssl.sh) can trust the CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path
    certificate: x509.Certificate
    private: ec.EllipticCurvePrivateKey


def _revocation(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    base = "http://ca.invalid/"  # .invalid: never resolvable (RFC 2606)
    points = [
        x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(base + "crl")],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
    ]
    access = [
        x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(base + "ocsp")
        )
    ]
    builder = builder.add_extension(x509.CRLDistributionPoints(points), critical=False)
    return builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)


def make_pair(
    directory: Path,
    name: str,
    *,
    addresses: tuple[str, ...] = (),
    days: float = 90,
    starts: float = -1,
    ca: Pair | None = None,
    is_ca: bool = False,
) -> Pair:
    """A key and certificate for `name` (and these IP addresses), valid from `starts` days
    from now to `days` from now; signed by `ca`, else by itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject if ca else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=starts))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if not is_ca:
        alt: list[x509.GeneralName] = [x509.DNSName(name)]
        alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        if ca is not None:  # where a real CA says revocations are published (never fetched)
            builder = _revocation(builder)
    else:
        builder = builder.add_extension(
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
    certificate = builder.sign(ca.private if ca else key, hashes.SHA256())
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Pair(cert_path, key_path, certificate, key)
