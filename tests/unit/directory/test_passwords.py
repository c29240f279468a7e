"""Password hashes: scrypt, self-describing, never the password itself."""

from __future__ import annotations

import pytest

from sitemail.core import InvalidValueError
from sitemail.directory import hash_password, verify_password


@pytest.fixture(scope="module")
def encoded() -> str:
    """One hash for the module (scrypt costs ~50 ms on purpose)."""
    return hash_password("correct horse")


def test_password_hash_is_scrypt_with_strong_parameters(encoded: str) -> None:
    """The stored form names scrypt with N=2^15, r=8, p=1, and never holds the password."""
    assert encoded.startswith("$scrypt$ln=15,r=8,p=1$")
    assert "correct horse" not in encoded


def test_password_verify_accepts_the_right_password(encoded: str) -> None:
    """The password that was hashed verifies."""
    assert verify_password("correct horse", encoded)


def test_password_verify_refuses_a_wrong_password(encoded: str) -> None:
    """Any other password does not."""
    assert not verify_password("correct horsE", encoded)


@pytest.mark.parametrize(
    "stored", ["", "plain", "$md5$x$y$z", "$scrypt$ln=x,r=8,p=1$AA$AA", "$scrypt$r=8$AA$AA"]
)
def test_password_verify_refuses_malformed_hashes(stored: str) -> None:
    """A stored value that is not our format never verifies (and never raises)."""
    assert verify_password("anything", stored) is False


def test_password_empty_is_refused() -> None:
    """An empty password is InvalidValueError."""
    with pytest.raises(InvalidValueError):
        hash_password("")
