"""Password hashes: scrypt (stdlib), self-describing, verified in constant time.

Format: `$scrypt$ln=15,r=8,p=1$<salt b64>$<hash b64>`. Only the hash is ever stored; it never
leaves its site (not replicated, never printed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from sitemail.core.errors import InvalidValueError

__all__ = ["hash_password", "verify_password"]

_LN, _R, _P = 15, 8, 1  # N = 2**15: ~50 ms here, OWASP's minimum for scrypt
_MAXMEM = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    if not password:
        raise InvalidValueError("the password is empty")
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=2**_LN, r=_R, p=_P, maxmem=_MAXMEM, dklen=32
    )
    return f"$scrypt$ln={_LN},r={_R},p={_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        _, scheme, params, salt_text, digest_text = encoded.split("$")
        settings = dict(item.split("=") for item in params.split(","))
        ln, r, p = int(settings["ln"]), int(settings["r"]), int(settings["p"])
    except (ValueError, KeyError):
        return False
    if scheme != "scrypt":
        return False
    expected = _unb64(digest_text)
    actual = hashlib.scrypt(
        password.encode("utf-8"),
        salt=_unb64(salt_text),
        n=2**ln,
        r=r,
        p=p,
        maxmem=_MAXMEM,
        dklen=len(expected),
    )
    return hmac.compare_digest(actual, expected)
