"""Header fields for mail authentication: From domains, and taking fields out of a message.

One job: read a message's header section as fields (unfolded) and remove fields from a
`queue.content.Content` without reading its body: a message in memory is rebuilt; a big one
behind its spool file gets the new header section in memory and its body read from the same
file past the old header section (`_Skip`), never copied.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import getaddresses

from sitemail.queue.content import HEAD_LIMIT, Content, Source, header_end

__all__ = [
    "QUARANTINE_FIELD",
    "from_domain",
    "from_domains",
    "header_fields",
    "is_quarantined",
    "without_fields",
]

# The edge's mark on a message DMARC quarantines: local delivery files it in Junk. The edge
# removes any that comes from outside, so only the organisation's edge can set it.
QUARANTINE_FIELD = "X-Sitemail-Quarantine"

_LINES = re.compile(rb"[^\n]*\n|[^\n]+$")  # lines with their ends (LF or CRLF) kept


def header_fields(head: bytes) -> list[tuple[str, str]]:
    """The header section's fields as (lowercase name, unfolded value)."""
    end = header_end(head)
    text = (head[:end] if end > 0 else head).decode("utf-8", "replace")
    out: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and out:
            name, value = out[-1]
            out[-1] = (name, value + " " + line.strip())
        elif ":" in line:
            name, _, value = line.partition(":")
            out.append((name.strip().lower(), value.strip()))
    return out


def from_domains(head: bytes) -> list[str]:
    """The domain (lowercase) of every address in every From field of the header section."""
    values = [value for name, value in header_fields(head) if name == "from"]
    domains = [addr.rpartition("@")[2] for _, addr in getaddresses(values) if "@" in addr]
    return [d.strip().lower().rstrip(".") for d in domains if d.strip()]


def from_domain(head: bytes) -> str | None:
    """The RFC 5322.From domain (lowercase) when there is exactly one From with one address."""
    if sum(1 for name, _ in header_fields(head) if name == "from") != 1:
        return None
    domains = from_domains(head)
    return domains[0] if len(domains) == 1 else None


def is_quarantined(head: bytes) -> bool:
    """Whether the edge marked this message for the Junk folder."""
    name = QUARANTINE_FIELD.lower()
    return any(field == name for field, _ in header_fields(head))


def _raw_fields(section: bytes) -> list[bytes]:
    """The header section's fields as raw octets, each with its folded lines and line ends."""
    fields: list[bytes] = []
    for line in _LINES.findall(section):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _field_name_value(raw: bytes) -> tuple[str, str]:
    name, _, value = raw.decode("utf-8", "replace").partition(":")
    return name.strip().lower(), " ".join(value.split())


@dataclass(frozen=True, slots=True)
class _Skip:
    """A source read from `skip` octets on (the body below a replaced header section)."""

    inner: Source
    skip: int

    def read_at(self, offset: int, size: int) -> bytes:
        return self.inner.read_at(self.skip + offset, size)


def without_fields(content: Content, drop: Callable[[str, str], bool]) -> Content:
    """`content` without the fields of its header section (not its prefix) for which
    `drop(lowercase name, unfolded value)` is true; the same object when none is."""
    body = content.data if content.source is None else content.body_head
    end = header_end(body)
    if end < 0:
        if content.source is not None and len(body) >= HEAD_LIMIT:
            return content  # a header section past HEAD_LIMIT: left as it is
        end = len(body)
    fields = _raw_fields(body[:end])
    kept = [f for f in fields if f.strip() == b"" or not drop(*_field_name_value(f))]
    if len(kept) == len(fields):
        return content
    section = b"".join(kept)
    if content.source is None:
        data = section + content.data[end:]
        return Content(data=data, body_size=len(data), prefix=content.prefix)
    size = content.body_size - end + len(section)
    return Content(
        data=b"",
        source=_Joined(section, _Skip(content.source, end)),
        body_size=size,
        body_head=section + content.body_head[end:],
        prefix=content.prefix,
    )


@dataclass(frozen=True, slots=True)
class _Joined:
    """`first` in memory, then `rest` (a source): a big message with a new header section."""

    first: bytes
    rest: Source

    def read_at(self, offset: int, size: int) -> bytes:
        if offset >= len(self.first):
            return self.rest.read_at(offset - len(self.first), size)
        head = self.first[offset : offset + size]
        if len(head) == size:
            return head
        return head + self.rest.read_at(0, size - len(head))
