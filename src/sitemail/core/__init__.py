"""Core values shared by every layer: addresses, replies, errors, the clock. No I/O here."""

from sitemail.core.address import Address, normalize_domain, parse_address, valid_local_part_chars
from sitemail.core.clock import Clock, ManualClock, SystemClock
from sitemail.core.errors import (
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
from sitemail.core.reply import Reply

__all__ = [
    "Address",
    "Clock",
    "ConfigError",
    "ConflictError",
    "DuplicateAddressError",
    "InvalidAddressError",
    "InvalidValueError",
    "ManualClock",
    "NotFoundError",
    "PermissionDeniedError",
    "Reply",
    "SitemailError",
    "StoreError",
    "SystemClock",
    "UsageError",
    "normalize_domain",
    "parse_address",
    "valid_local_part_chars",
]
