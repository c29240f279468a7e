"""The error tree: each fault carries the sysexits code every front end reports."""

from __future__ import annotations

import pytest

from sitemail.core import (
    ConfigError,
    ConflictError,
    DuplicateAddressError,
    InvalidAddressError,
    InvalidValueError,
    NotFoundError,
    PermissionDeniedError,
    SitemailError,
    StoreError,
    UsageError,
)


@pytest.mark.parametrize(
    ("error", "exit_code"),
    [
        (SitemailError, 1),
        (UsageError, 64),
        (InvalidAddressError, 65),
        (InvalidValueError, 65),
        (NotFoundError, 66),
        (ConflictError, 73),
        (DuplicateAddressError, 73),
        (StoreError, 74),
        (PermissionDeniedError, 77),
        (ConfigError, 78),
    ],
)
def test_error_exit_code_follows_sysexits(error: type[SitemailError], exit_code: int) -> None:
    """Each fault maps to its sysexits.h code, so scripts can tell a typo from a broken disk."""
    assert error("x").exit_code == exit_code


def test_error_duplicate_address_is_a_conflict() -> None:
    """A duplicate address is caught by handlers of ConflictError."""
    assert issubclass(DuplicateAddressError, ConflictError)


def test_error_invalid_address_is_a_usage_error() -> None:
    """Bad input of every kind is a UsageError."""
    assert issubclass(InvalidAddressError, UsageError)
    assert issubclass(InvalidValueError, UsageError)


def test_error_message_is_kept_for_the_front_end() -> None:
    """`message` is the text written for the person who must act on it."""
    assert NotFoundError("no recipient 'x'").message == "no recipient 'x'"
