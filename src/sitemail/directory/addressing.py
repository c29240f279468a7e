"""Site Addressing: the SMTP template and how it turns a recipient into an address.

One job, pure: parse a template like `%1g%s@example.com` and expand it for one recipient.
Tokens (Exchange's, KB Q153270): `%m` alias, `%g` given name, `%s` surname, `%i` initials,
`%d` display name, each optionally preceded by a count (`%1g` = first letter), `%rxy` replaces
character x by y in what follows, `%%` a literal percent. Characters that a dot-atom local part
cannot hold are dropped after expansion. A template given as just `@domain` means `%m@domain`.
If expansion leaves an empty local part (say `%g` for a recipient without a given name), the
alias is used, so every recipient still gets an address. A local part is cut to 64 octets
(RFC 5321), and a collision counter (`jsmith2`) replaces its tail rather than overflow it.
`Template.expander` gives the same expansion as a plain function of the five fields, for
re-addressing a whole site: it skips the cleaning when the raw expansion is already a plain
ASCII dot-atom of at most 64 octets (an alias under `%m`, the usual case).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from sitemail.core.address import MAX_LOCAL_PART, normalize_domain, valid_local_part_chars
from sitemail.core.errors import InvalidValueError

__all__ = ["AddressFields", "Expander", "Template", "is_plain_local_part", "parse_template"]

_TOKEN = re.compile(r"%(\d*)([mgsid])|%r(.)(.)|%%|%")
# A local part that cleaning leaves as it is: ASCII atext in dot-separated runs.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_LOCAL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")

# (alias, given_name, surname, initials, display_name) -> local part
Expander = Callable[[str, str, str, str, str], str]


@dataclass(frozen=True, slots=True)
class AddressFields:
    alias: str
    given_name: str = ""
    surname: str = ""
    initials: str = ""
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class Template:
    """A validated SMTP template: `local_format` with tokens, and the domain."""

    local_format: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local_format}@{self.domain}"

    def local_part(self, fields: AddressFields) -> str:
        """Expand the local part for one recipient (never empty)."""
        out: list[str] = []
        for literal, field, count, replacements in _compile(self.local_format):
            if not field:
                out.append(literal)
                continue
            value: str = getattr(fields, field)
            if count is not None:
                value = value[:count]
            for old, new in replacements:
                value = value.replace(old, new)
            out.append(value)
        local = _fit(valid_local_part_chars("".join(out)), MAX_LOCAL_PART)
        return local or _fit(valid_local_part_chars(fields.alias), MAX_LOCAL_PART) or "recipient"

    def expander(self) -> Expander:
        """`local_part` as a function of the five fields, for expanding many recipients.

        Same answer for every input; fast when the raw expansion needs no cleaning.
        """
        return _expander(self.local_format)

    @property
    def is_alias(self) -> bool:
        """Whether the local part is the alias alone (`%m`): a plain alias is used as it is."""
        return [p[1:] for p in _compile(self.local_format) if p[0] or p[1]] == [("alias", None, ())]

    @property
    def uses_names(self) -> bool:
        """Whether the template reads more than the alias (%g %s %i %d)."""
        return any(field not in ("", "alias") for _, field, _, _ in _compile(self.local_format))

    def address(self, fields: AddressFields) -> str:
        return f"{self.local_part(fields)}@{self.domain}"

    def numbered(self, local: str, counter: int) -> str:
        """The address `local` + `counter` (a collision's `jsmith2`), still within 64 octets."""
        suffix = str(counter)
        return f"{_fit(local, MAX_LOCAL_PART - len(suffix))}{suffix}@{self.domain}"


def _fit(local: str, octets: int) -> str:
    """Cut `local` to at most `octets` of UTF-8 on a character boundary, without a final dot."""
    encoded = local.encode("utf-8")
    if len(encoded) <= octets:
        return local
    return encoded[:octets].decode("utf-8", "ignore").rstrip(".")


_FIELDS = {"m": "alias", "g": "given_name", "s": "surname", "i": "initials", "d": "display_name"}
# One piece of a compiled local format: literal text, or the AddressFields attribute to expand
# with its count, and the %r replacements in force at that point.
_Piece = tuple[str, str, int | None, tuple[tuple[str, str], ...]]


@functools.lru_cache(maxsize=64)
def _compile(local_format: str) -> tuple[_Piece, ...]:
    """Split a local format into pieces once, so expanding it per recipient is a short loop."""
    replacements: tuple[tuple[str, str], ...] = ()
    pieces: list[_Piece] = []
    pos = 0

    def literal(text: str) -> None:
        for old, new in replacements:
            text = text.replace(old, new)
        pieces.append((text, "", None, ()))

    for match in _TOKEN.finditer(local_format):
        literal(local_format[pos : match.start()])
        pos = match.end()
        if match.group(0) == "%%":
            pieces.append(("%", "", None, ()))
        elif match.group(2):
            count = int(match.group(1)) if match.group(1) else None
            pieces.append(("", _FIELDS[match.group(2)], count, replacements))
        elif match.group(3) is not None:
            replacements = (*replacements, (match.group(3), match.group(4)))
    literal(local_format[pos:])
    return tuple(pieces)


_FIELD_INDEX = {"alias": 0, "given_name": 1, "surname": 2, "initials": 3, "display_name": 4}


@functools.lru_cache(maxsize=64)
def _expander(local_format: str) -> Expander:
    reference = Template(local_format, "").local_part
    pieces = [p for p in _compile(local_format) if p[0] or p[1]]  # empty literals add nothing
    plain = _PLAIN_LOCAL.fullmatch

    if Template(local_format, "").is_alias:  # `%m`: the alias as it is

        def expand_alias(alias: str, given: str, surname: str, initials: str, display: str) -> str:
            if len(alias) <= MAX_LOCAL_PART and plain(alias):
                return alias
            return reference(AddressFields(alias, given, surname, initials, display))

        return expand_alias

    steps = [
        (literal, _FIELD_INDEX[field] if field else -1, count, replacements)
        for literal, field, count, replacements in pieces
    ]

    def expand(alias: str, given: str, surname: str, initials: str, display: str) -> str:
        values = (alias, given, surname, initials, display)
        out: list[str] = []
        for literal, index, count, replacements in steps:
            if index < 0:
                out.append(literal)
                continue
            value = values[index][:count]
            for old, new in replacements:
                value = value.replace(old, new)
            out.append(value)
        raw = "".join(out)
        if len(raw) <= MAX_LOCAL_PART and plain(raw):
            return raw
        return reference(AddressFields(*values))

    return expand


def is_plain_local_part(local: str) -> bool:
    """Whether `local` is an ASCII dot-atom of at most 64 octets, which expansion keeps as it is."""
    return len(local) <= MAX_LOCAL_PART and _PLAIN_LOCAL.fullmatch(local) is not None


def parse_template(text: str) -> Template:
    """Validate a template; `@domain` alone means `%m@domain`. Raises `InvalidValueError`."""
    raw = text.strip()
    if raw.count("@") != 1:
        raise InvalidValueError(f"SMTP template needs exactly one '@': {text!r}")
    local_format, _, domain = raw.partition("@")
    if not local_format:
        local_format = "%m"
    for match in _TOKEN.finditer(local_format):
        if match.group(0) == "%":
            raise InvalidValueError(
                f"unknown token in SMTP template {text!r}: use %m %g %s %i %d, %rxy or %%"
            )
    try:
        normalized = normalize_domain(domain)
    except Exception as exc:
        raise InvalidValueError(f"SMTP template {text!r}: {exc}") from exc
    return Template(local_format=local_format, domain=normalized)
