"""The organisation's hop trace: which sites a message has passed, and when, in its header.

One job: write and read `X-Sitemail-Trace`. Every site-to-site hop prepends one such field
naming the sending site, its queue id (so tracking can follow the message across sites) and
the time it left, in seconds since the epoch by the sending site's clock:

    X-Sitemail-Trace: SiteA; id=2F9K3Q7M1; at=1795870800.125

routing.router uses it against ping-pong: a message is not sent back to a site it already
passed while the directories disagree about where the recipient lives. The field is not
authenticated: anyone can write it, but a forged trace can only hold up the forger's own
message, and loops stay bounded by the Received hop limit.
"""

from __future__ import annotations

import re

__all__ = ["TRACE_FIELD", "trace_field", "trace_sites"]

TRACE_FIELD = "X-Sitemail-Trace"
_FIELD = re.compile(
    rb"^x-sitemail-trace:[ \t]*([A-Za-z0-9._-]{1,64})[ \t]*;[^\r\n]*?\bat=([0-9]{1,12}(?:\.[0-9]{1,6})?)",
    re.IGNORECASE | re.MULTILINE,
)


def trace_field(site: str, queue_id: str, now: float) -> bytes:
    """The header line (CRLF included) a hop from `site` prepends to the message."""
    return f"{TRACE_FIELD}: {site}; id={queue_id}; at={now:.3f}\r\n".encode("ascii")


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
