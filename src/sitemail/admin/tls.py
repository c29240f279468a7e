"""This server's TLS certificate: the self-signed default, installing a real one, describing it.

One job: the certificate and key files of one data dir. `sitemail init` makes a self-signed
pair valid for one year so STARTTLS works from the first start; `sitemail tls set --cert
--key` checks and installs an administrator's pair (the chain as given, the key matching the
first certificate, within its validity), which the running server picks up for new
connections (core/tls.py) without a restart; `describe` says what is installed, for
`sitemail tls show` and the doctor.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from sitemail.config import ServerConfig
from sitemail.core.errors import InvalidValueError, NotFoundError

__all__ = [
    "SELF_SIGNED_DAYS",
    "CertificateInfo",
    "describe",
    "install_certificate",
    "make_self_signed",
]

SELF_SIGNED_DAYS = 365  # a year: browsers and mail clients distrust longer-lived certificates
_MAX_FILE = 1024 * 1024  # a certificate chain or a key is a few kilobytes


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    subject: str
    issuer: str
    names: tuple[str, ...]  # DNS names and IP addresses of the subjectAltName
    not_before: dt.datetime
    not_after: dt.datetime
    self_signed: bool
    fingerprint: str  # SHA-256 of the DER certificate, hex

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


def make_self_signed(
    cert_path: Path, key_path: Path, names: list[str], addresses: list[str]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key))
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, mode 0600 (a certificate is public, but the
    data dir is the server's alone: no reason to differ)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_FILE + 1)
    except OSError as exc:
        raise InvalidValueError(f"cannot read the {what} {path}: {exc.strerror}") from exc
    if len(data) > _MAX_FILE:
        raise InvalidValueError(f"the {what} {path} is over {_MAX_FILE} bytes: not a PEM file")
    return data


def _load_chain(path: Path) -> list[x509.Certificate]:
    data = _read(path, "certificate file")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise InvalidValueError(
            f"{path} holds no PEM certificate (expected '-----BEGIN CERTIFICATE-----')"
        ) from exc
    return chain


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    data = _read(path, "key file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise InvalidValueError(
            f"the key {path} is encrypted: the server starts unattended, give it the key "
            "without a passphrase (openssl pkey -in KEY -out PLAIN)"
        ) from exc
    except ValueError as exc:
        raise InvalidValueError(f"{path} holds no PEM private key") from exc
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise InvalidValueError(f"the RSA key {path} has {key.key_size} bits: 2048 at least")
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidValueError(f"the key {path} is neither RSA nor ECDSA")
    return key


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def install_certificate(
    config: ServerConfig, cert_file: Path, key_file: Path, now: dt.datetime | None = None
) -> CertificateInfo:
    """Check the pair and put it where [tls] cert_file / key_file say (atomically); the
    running server uses it for its next connections. InvalidValueError says what is wrong."""
    now = now or dt.datetime.now(dt.UTC)
    chain = _load_chain(cert_file)
    key = _load_key(key_file)
    leaf = chain[0]
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if _spki(leaf) != public:
        raise InvalidValueError(
            f"the key {key_file} does not match the certificate {cert_file} (the first "
            "certificate of the file must be the server's own, then its intermediates)"
        )
    info = _info(leaf)
    if now >= info.not_after:
        raise InvalidValueError(
            f"the certificate {cert_file} expired on {info.not_after:%Y-%m-%d %H:%M} UTC"
        )
    if now < info.not_before:
        raise InvalidValueError(
            f"the certificate {cert_file} is not valid before {info.not_before:%Y-%m-%d %H:%M} UTC"
        )
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    key_pem = _key_pem(key)
    _check_loads(chain_pem, key_pem)
    _write(config.path(config.tls.key_file), key_pem)
    _write(config.path(config.tls.cert_file), chain_pem)
    return info


def _check_loads(chain_pem: bytes, key_pem: bytes) -> None:
    """OpenSSL itself must accept the pair, as the server will load it."""
    with tempfile.TemporaryDirectory() as temp:
        cert, key = Path(temp, "cert.pem"), Path(temp, "key.pem")
        cert.write_bytes(chain_pem)
        key.write_bytes(key_pem)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise InvalidValueError(f"OpenSSL refuses this certificate and key: {exc}") from exc


def _info(cert: x509.Certificate) -> CertificateInfo:
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*alt.get_values_for_type(x509.DNSName)]
        names += [str(a) for a in alt.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        names=tuple(names),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        self_signed=cert.issuer == cert.subject,
        fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def describe(config: ServerConfig) -> CertificateInfo:
    """The installed certificate (the first of the file)."""
    path = config.path(config.tls.cert_file)
    try:
        return _info(_load_chain(path)[0])
    except InvalidValueError as exc:
        raise NotFoundError(f"cannot read the TLS certificate: {exc.message}") from exc
