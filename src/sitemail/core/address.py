"""E-mail addresses and domains: parsing, validation and the lookup key.

One job: turn text into a validated `Address` or refuse it with `InvalidAddressError`.
Rules (RFC 5321 section 4.1.2 / 4.5.3.1): local part a dot-atom or a quoted string of at most
64 octets; domain of LDH labels (IDN converted to A-labels), at most 255 octets; no source
routes (`@a,@b:user@c`). Quoted local parts that carry an `@` are refused outright: they exist
only to smuggle a second address past a relay check.

Lookup keys are the whole address in lower case: like Exchange (and Postfix's table lookups),
sitemail treats local parts case-insensitively, so `JSmith@Example.COM` and `jsmith@example.com`
are one proxy address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sitemail.core.errors import InvalidAddressError

__all__ = [
    "DSA_LOCAL_PART",
    "Address",
    "normalize_domain",
    "parse_address",
    "valid_local_part_chars",
]

# Every site's directory-service mailbox (Exchange's DSA): replication mail goes to
# DSA_LOCAL_PART@<the site's routing domain>. Routing, the SMTP policy and replication share it.
DSA_LOCAL_PART = "sitemail-dsa"
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_LABEL = 63

# RFC 5322 atext; non-ASCII is allowed for SMTPUTF8 (RFC 6531 extends atext with UTF8-non-ascii).
# Lone surrogates (from `surrogateescape` decoding, e.g. of argv) are not UTF-8: excluded.
_UTF8 = r"\u0080-\ud7ff\ue000-\U0010ffff"
_ATEXT = rf"A-Za-z0-9!#$%&'*+/=?^_`{{|}}~\-{_UTF8}"
_DOT_ATOM = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_QUOTED = re.compile(rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*"')
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ADDRESS_LITERAL = re.compile(r"\[(?:\d{1,3}\.){3}\d{1,3}\]")
_NOT_ATEXT = re.compile(rf"[^{_ATEXT}.]")
_DOTS = re.compile(r"\.{2,}")


def valid_local_part_chars(text: str) -> str:
    """Drop every character not allowed in a dot-atom local part (Site Addressing's rule).

    Invisible non-ASCII characters (no-break and other spaces, controls, format characters)
    go too: `parse_address` strips surrounding blanks, so a local part must not start with one.
    """
    cleaned = _NOT_ATEXT.sub("", text)
    if not cleaned.isascii():
        cleaned = "".join(
            c for c in cleaned if c.isascii() or (c.isprintable() and not c.isspace())
        )
    # Dots may not lead, trail or repeat in a dot-atom.
    if ".." in cleaned:
        cleaned = _DOTS.sub(".", cleaned)
    return cleaned.strip(".")


def normalize_domain(text: str) -> str:
    """Validate a domain and return it in lower-case A-label form; refuse anything else."""
    domain = text.strip().rstrip(".")
    if not domain:
        raise InvalidAddressError("empty domain")
    if _ADDRESS_LITERAL.fullmatch(domain):
        return domain
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError as exc:
        raise InvalidAddressError(f"invalid internationalised domain {text!r}") from exc
    ascii_domain = ascii_domain.lower()
    if len(ascii_domain) > MAX_DOMAIN:
        raise InvalidAddressError(f"domain longer than {MAX_DOMAIN} octets: {text!r}")
    labels = ascii_domain.split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise InvalidAddressError(f"invalid domain {text!r}: bad label {label!r}")
    return ascii_domain


@dataclass(frozen=True, slots=True)
class Address:
    """A validated mailbox address; `domain` is always lower-case A-label form."""

    local: str
    domain: str

    @property
    def key(self) -> str:
        """The organisation-wide lookup key (case-insensitive, see module docstring)."""
        return f"{self.local.lower()}@{self.domain}"

    @property
    def has_routing_characters(self) -> bool:
        """True for the percent hack (`a%b@c`) and bang paths (`b!a@c`), refused for relay."""
        return "%" in self.local or "!" in self.local

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def parse_address(text: str) -> Address:
    """Parse `local@domain` (angle brackets allowed) into an `Address`, or raise."""
    raw = text.strip()
    if raw.startswith("<") and raw.endswith(">"):
        raw = raw[1:-1]
    if raw.startswith("@"):
        raise InvalidAddressError(f"source routes are not accepted: {text!r}")
    local, sep, domain = raw.rpartition("@")
    if not sep or not local:
        raise InvalidAddressError(f"not an address (local@domain expected): {text!r}")
    if local.startswith('"'):
        if not _QUOTED.fullmatch(local):
            raise InvalidAddressError(f"malformed quoted local part: {text!r}")
        if "@" in local:
            raise InvalidAddressError(f"quoted local parts carrying '@' are refused: {text!r}")
    elif not _DOT_ATOM.fullmatch(local):
        raise InvalidAddressError(f"invalid local part {local!r} in {text!r}")
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise InvalidAddressError(f"local part longer than {MAX_LOCAL_PART} octets: {text!r}")
    return Address(local=local, domain=normalize_domain(domain))
