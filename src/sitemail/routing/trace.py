"""The organisation's hop trace: which sites a message has passed, and when, in its header.

One job: write and read `X-Sitemail-Trace`. Every site-to-site hop prepends one such field
naming the sending site, its queue id (so tracking can follow the message across sites) and
the time it left, in seconds since the epoch by the sending site's clock:

    X-Sitemail-Trace: SiteA; id=2F9K3Q7M1; at=1795870800.125

routing.router uses it against ping-pong: a message is not sent back to a site it already
passed while the directories disagree about where the recipient lives. The field is not
authenticated: anyone can write it, but a forged trace can only hold up the forger's own
message, and loops stay bounded by the Received hop limit.

Further `k=v` parameters may follow (`v=`: the sending site's directory version when it
routed the message, so a site the message comes back to can tell a true loop, the same
decision again, from a re-route after its directory changed). Readers ignore parameters they
do not know, so sites add parameters without breaking older readers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["TRACE_FIELD", "Hop", "Trace", "read_trace", "trace_field", "trace_sites"]

TRACE_FIELD = "X-Sitemail-Trace"
_FIELD = re.compile(
    rb"^x-sitemail-trace:[ \t]*([A-Za-z0-9._-]{1,64})[ \t]*;[^\r\n]*?\bat=([0-9]{1,12}(?:\.[0-9]{1,6})?)",
    re.IGNORECASE | re.MULTILINE,
)


_LINE = re.compile(
    rb"^x-sitemail-trace:[ \t]*([A-Za-z0-9._-]{1,64})[ \t]*;([^\r\n]*)",
    re.IGNORECASE | re.MULTILINE,
)
_PARAM = re.compile(r"^([A-Za-z][A-Za-z0-9_-]{0,31})=([\x21-\x3a\x3c-\x7e]{1,128})$")
_AT = re.compile(r"^[0-9]{1,12}(?:\.[0-9]{1,6})?$")


def trace_field(site: str, queue_id: str, now: float, **params: str) -> bytes:
    """The header line (CRLF included) a hop from `site` prepends to the message; `params`
    (printable, no `;` or space) follow the standard three."""
    extra = "".join(f"; {k}={v}" for k, v in params.items() if v)
    return f"{TRACE_FIELD}: {site}; id={queue_id}; at={now:.3f}{extra}\r\n".encode("ascii")


def trace_sites(content: bytes) -> dict[str, float]:
    """Each site named in the message's trace fields (header only) with the latest time the
    message left it."""
    end = content.find(b"\r\n\r\n")
    header = content if end < 0 else content[:end]
    passed: dict[str, float] = {}
    for site, at in _FIELD.findall(header):
        name, when = site.decode("ascii"), float(at)
        passed[name] = max(when, passed.get(name, 0.0))
    return passed


@dataclass(frozen=True, slots=True)
class Hop:
    """One pass of the message through a site, as its trace field tells it."""

    site: str
    at: float
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


class Trace(dict[str, float]):
    """`trace_sites` (site -> latest time the message left it), the passes in header order
    (latest first), and when the message reached this site (None: not queued here yet)."""

    __slots__ = ("arrived", "hops")

    def __init__(
        self,
        passed: Mapping[str, float] | None = None,
        hops: Iterable[Hop] = (),
        arrived: float | None = None,
    ) -> None:
        super().__init__(passed or {})
        self.hops: tuple[Hop, ...] = tuple(hops)
        self.arrived = arrived

    def passes(self, site: str) -> list[Hop]:
        """The passes through `site`, latest first."""
        return [h for h in self.hops if h.site == site]


def read_trace(content: bytes, arrived: float | None = None) -> Trace:
    """The message's trace fields (header only) with each pass's parameters; a field or a
    parameter that does not parse is skipped (the trace is a hint, never a reason to fail)."""
    end = content.find(b"\r\n\r\n")
    header = content if end < 0 else content[:end]
    hops: list[Hop] = []
    for site, rest in _LINE.findall(header):
        params: dict[str, str] = {}
        for item in rest.decode("ascii", "replace").split(";"):
            match = _PARAM.match(item.strip())
            if match:
                params.setdefault(match.group(1).lower(), match.group(2))
        at = params.get("at", "")
        if _AT.match(at):
            hops.append(Hop(site.decode("ascii"), float(at), MappingProxyType(params)))
    return Trace(trace_sites(content), hops, arrived)
