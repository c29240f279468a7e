"""Site Addressing: the SMTP template and how it turns a recipient into an address.

One job, pure: parse a template like `%1g%s@example.com` and expand it for one recipient.
Tokens (Exchange's, KB Q153270): `%m` alias, `%g` given name, `%s` surname, `%i` initials,
`%d` display name, each optionally preceded by a count (`%1g` = first letter), `%rxy` replaces
character x by y in what follows, `%%` a literal percent. Characters that a dot-atom local part
cannot hold are dropped after expansion. A template given as just `@domain` means `%m@domain`.
If expansion leaves an empty local part (say `%g` for a recipient without a given name), the
alias is used, so every recipient still gets an address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sitemail.core.address import normalize_domain, valid_local_part_chars
from sitemail.core.errors import InvalidValueError

__all__ = ["AddressFields", "Template", "parse_template"]

_TOKEN = re.compile(r"%(\d*)([mgsid])|%r(.)(.)|%%|%")


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
        values = {
            "m": fields.alias,
            "g": fields.given_name,
            "s": fields.surname,
            "i": fields.initials,
            "d": fields.display_name,
        }
        replacements: list[tuple[str, str]] = []
        out: list[str] = []
        pos = 0
        for match in _TOKEN.finditer(self.local_format):
            out.append(_replace_all(self.local_format[pos : match.start()], replacements))
            pos = match.end()
            text = match.group(0)
            if text == "%%":
                out.append("%")
            elif match.group(2):
                count, token = match.group(1), match.group(2)
                value = values[token][: int(count)] if count else values[token]
                out.append(_replace_all(value, replacements))
            elif match.group(3) is not None:
                replacements.append((match.group(3), match.group(4)))
        out.append(_replace_all(self.local_format[pos:], replacements))
        local = valid_local_part_chars("".join(out))
        return local or valid_local_part_chars(fields.alias) or "recipient"

    def address(self, fields: AddressFields) -> str:
        return f"{self.local_part(fields)}@{self.domain}"


def _replace_all(text: str, replacements: list[tuple[str, str]]) -> str:
    for old, new in replacements:
        text = text.replace(old, new)
    return text


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
