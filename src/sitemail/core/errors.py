"""The one error tree of sitemail: every fault a caller can meet, with its protocol meaning.

Outcomes are values (a `Reply`, a delivery status); *faults* are exceptions from this tree.
Each class carries what every front end needs to answer for it, so no front end maps errors
by hand:

    SitemailError                      exit 1, HTTP 500, SMTP 451 4.3.0
    ├── ConfigError                    exit 78 (EX_CONFIG), HTTP 500
    │   └── NoUserError                exit 67 (EX_NOUSER): no user to run the server as
    ├── StoreError                     exit 74 (EX_IOERR), HTTP 503, SMTP 451 4.3.0
    │   └── StoreUnavailableError      exit 75 (EX_TEMPFAIL), HTTP 503, SMTP 452 4.3.1
    ├── UsageError                     exit 64 (EX_USAGE), HTTP 400, SMTP 501 5.5.4
    │   ├── InvalidAddressError        exit 65 (EX_DATAERR), HTTP 422, SMTP 553 5.1.3
    │   ├── InvalidValueError          exit 65, HTTP 422
    │   └── MalformedMessageError      exit 65, HTTP 422, SMTP 550 5.6.0
    ├── NotFoundError                  exit 66 (EX_NOINPUT), HTTP 404, SMTP 550 5.1.1
    ├── ConflictError                  exit 73 (EX_CANTCREAT), HTTP 409
    │   └── DuplicateAddressError      exit 73, HTTP 409, SMTP 550 5.1.4 (ambiguous)
    └── PermissionDeniedError          exit 77 (EX_NOPERM), HTTP 403, SMTP 550 5.7.1

Exit codes follow sysexits.h so scripts can tell a typo from a broken disk.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConflictError",
    "DuplicateAddressError",
    "InvalidAddressError",
    "InvalidValueError",
    "MalformedMessageError",
    "NoUserError",
    "NotFoundError",
    "PermissionDeniedError",
    "SitemailError",
    "StoreError",
    "StoreUnavailableError",
    "UsageError",
]


class SitemailError(Exception):
    """Base of every sitemail fault; the message is written for the person who must act on it."""

    exit_code: int = 1
    http_status: int = 500
    smtp_code: int = 451
    smtp_enhanced: str = "4.3.0"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(SitemailError):
    """The configuration file or a setting is invalid; the server refuses to start."""

    exit_code = 78


class NoUserError(ConfigError):
    """The server, started as root, has no unprivileged user to run as: it refuses."""

    exit_code = 67


class StoreError(SitemailError):
    """The database or spool could not be read or written."""

    exit_code = 74
    http_status = 503


class StoreUnavailableError(StoreError):
    """The database cannot be written or read just now, whatever is asked of it: disk full,
    I/O error, locked, connection lost. Not the fault of the data at hand: try again later
    (as opposed to a plain StoreError, which the same write would meet again)."""

    exit_code = 75
    smtp_code = 452
    smtp_enhanced = "4.3.1"


class UsageError(SitemailError):
    """The request itself is malformed."""

    exit_code = 64
    http_status = 400
    smtp_code = 501
    smtp_enhanced = "5.5.4"


class InvalidAddressError(UsageError):
    """An e-mail address or domain is not acceptable (syntax, forbidden forms)."""

    exit_code = 65
    http_status = 422
    smtp_code = 553
    smtp_enhanced = "5.1.3"


class InvalidValueError(UsageError):
    """A value is outside what the object allows (a template token, a cost, a name)."""

    exit_code = 65
    http_status = 422


class MalformedMessageError(UsageError):
    """A message whose header or MIME structure cannot be read safely (a malformed header
    line, nesting or header sizes beyond the bounds of core.mailshape)."""

    exit_code = 65
    http_status = 422
    smtp_code = 550
    smtp_enhanced = "5.6.0"


class NotFoundError(SitemailError):
    """A named object (site, recipient, queue entry...) does not exist."""

    exit_code = 66
    http_status = 404
    smtp_code = 550
    smtp_enhanced = "5.1.1"


class ConflictError(SitemailError):
    """The change would clash with an existing object (duplicate alias, name in use)."""

    exit_code = 73
    http_status = 409
    smtp_code = 550
    smtp_enhanced = "5.1.4"


class DuplicateAddressError(ConflictError):
    """A proxy address is already held by another recipient of the organisation."""


class PermissionDeniedError(SitemailError):
    """The caller may not do this (a replica owned by another site, relaying, authentication)."""

    exit_code = 77
    http_status = 403
    smtp_code = 550
    smtp_enhanced = "5.7.1"
