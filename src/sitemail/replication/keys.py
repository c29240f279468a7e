"""Site keys: the Ed25519 key pair that signs every replication message a site sends.

One job: make, store, load and print site keys. The private key stays in the data dir
(`keys/site-ed25519.pem`, mode 0600) and never leaves its site; the public key is written as
one token, `ed25519:<base64 of the 32 raw bytes>`, which is what an admin pastes into
`--peer-key` at the other site, and its fingerprint is `SHA256:<base64>` (as OpenSSH shows).
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sitemail.core.errors import ConfigError, InvalidValueError

__all__ = [
    "KEY_FILE",
    "PublicKey",
    "SiteKey",
    "fingerprint",
    "generate_site_key",
    "load_site_key",
    "parse_public_key",
    "shown_fingerprint",
]

KEY_FILE = "keys/site-ed25519.pem"
_PREFIX = "ed25519:"


def fingerprint(public_token: str) -> str:
    raw = parse_public_key(public_token).raw
    digest = hashlib.sha256(raw).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def shown_fingerprint(token: str) -> str:
    """`fingerprint` for display of a key that may be invalid (e.g. carried by a stranger)."""
    try:
        return fingerprint(token)
    except InvalidValueError:
        return "(no valid key)"


class PublicKey:
    """A peer's (or our own) public key: verifies signatures."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._key = Ed25519PublicKey.from_public_bytes(raw)

    @property
    def token(self) -> str:
        return _PREFIX + base64.b64encode(self.raw).decode("ascii")

    def verify(self, signature: bytes, payload: bytes) -> bool:
        try:
            self._key.verify(signature, payload)
        except InvalidSignature:
            return False
        return True


def parse_public_key(token: str) -> PublicKey:
    """`ed25519:<base64>` -> PublicKey, or InvalidValueError saying what is expected."""
    text = token.strip()
    if not text.startswith(_PREFIX):
        raise InvalidValueError(f"not a site key (expected 'ed25519:<base64>'): {token!r}")
    try:
        raw = base64.b64decode(text[len(_PREFIX) :], validate=True)
    except ValueError as exc:
        raise InvalidValueError(f"site key is not valid base64: {token!r}") from exc
    if len(raw) != 32:
        raise InvalidValueError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return PublicKey(raw)


class SiteKey:
    """This site's key pair: signs outgoing replication messages."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = PublicKey(raw)

    def sign(self, payload: bytes) -> bytes:
        return self._private.sign(payload)


def generate_site_key(data_dir: Path) -> SiteKey:
    """Make a new key pair and write the private key (0600); refuse to overwrite one."""
    path = data_dir / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"{path} exists already: a site key is never replaced silently") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return SiteKey(private)


def load_site_key(data_dir: Path) -> SiteKey:
    path = data_dir / KEY_FILE
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} is missing: this data dir has no site key") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a PEM private key: {exc}") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key")
    return SiteKey(private)
