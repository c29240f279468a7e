"""The organisation's hop trace: which sites a message has passed, and when, in its header.

One job: write and read `X-Sitemail-Trace`. Every site-to-site hop prepends one such field
naming the sending site, its queue id (so tracking can follow the message across sites) and
the time it left, in seconds since the epoch by the sending site's clock:

    X-Sitemail-Trace: SiteA; id=2F9K3Q7M1; at=1795870800.125; sig=<86 base64url digits>

Parameters are `name=value` after the site, separated by `;`; readers skip the ones they do
not know, so sites add parameters without breaking older readers. `v=` is the sending site's
directory version when it routed the message, so a site the message comes back to can tell a
true loop (the same decision again) from a re-route after its directory changed.
routing.router uses the sites and times against ping-pong: a message is not sent back to a
site it already passed while the directories disagree about where the recipient lives. For that use the field is not authenticated: a forged trace can only hold up the
forger's own message, and loops stay bounded by the Received hop limit.

`sig` makes the hop's origin, (site, queue id), something the next site can believe, so it
can recognise a message it already accepted from that site and not store it twice
(queue.dedupe). It is the sending site's Ed25519 signature (replication.keys) over:
- the field's value before `; sig=` (site, id, at and any other parameter, which come first:
  nothing may follow `sig`);
- the site it is sent to (the next hop, which checks it against its own name);
- the envelope of the SMTP transaction that carries it: the sender, and the recipients the
  next hop accepted (sorted, lower-cased), so the signature made for one transaction holds
  for no other set of recipients;
- a SHA-256 digest of the message as sent below the field (CRLF line ends, ending in CRLF).
So a trace copied onto other content, another sender, other recipients or to another site
does not verify, and a message it does verify for is byte for byte the one the site sent,
to that site and those recipients: a copy of a transaction that site has already accepted.
The receiver checks only the topmost field, and only when it is the first thing the client
sent (right below the receiver's own Received field): a field with
anything above it (a header an outsider put there) does not count.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

__all__ = [
    "SIGNATURE_EXTRA",
    "TRACE_FIELD",
    "Hop",
    "Origin",
    "Signer",
    "Trace",
    "Verifier",
    "content_digest",
    "read_trace",
    "signed_trace_field",
    "trace_field",
    "trace_sites",
    "verified_origin",
]

TRACE_FIELD = "X-Sitemail-Trace"
_FIELD = re.compile(
    rb"^x-sitemail-trace:[ \t]*([A-Za-z0-9._-]{1,64})[ \t]*;[^\r\n]*?\bat=([0-9]{1,12}(?:\.[0-9]{1,6})?)",
    re.IGNORECASE | re.MULTILINE,
)
# The topmost field of what the previous hop sent, as `signed_trace_field` writes it.
_SIGNED = re.compile(
    rb"x-sitemail-trace:[ \t]*(([A-Za-z0-9._-]{1,64})[ \t]*;[^\r\n]*?)"
    rb";[ \t]*sig=([A-Za-z0-9_-]{86})[ \t]*\r\n",
    re.IGNORECASE,
)
_QUEUE_ID = re.compile(rb"(?:^|;)[ \t]*id=([A-Za-z0-9]{1,32})[ \t]*(?:;|$)")
_CONTEXT = b"sitemail X-Sitemail-Trace signature 1\n"
SIGNATURE_EXTRA = len("; sig=") + 86  # what the signature adds to the unsigned line

Signer = Callable[[bytes], bytes]  # the site key's `sign`


class Verifier(Protocol):
    """A site's public key (replication.keys.PublicKey)."""

    def verify(self, signature: bytes, payload: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class Origin:
    """A hop's proven origin: the sibling site that sent the message, and its queue id."""

    site: str
    queue_id: str


_LINE = re.compile(
    rb"^x-sitemail-trace:[ \t]*([A-Za-z0-9._-]{1,64})[ \t]*;([^\r\n]*)",
    re.IGNORECASE | re.MULTILINE,
)
_PARAM = re.compile(r"^([A-Za-z][A-Za-z0-9_-]{0,31})=([\x21-\x3a\x3c-\x7e]{1,128})$")
_AT = re.compile(r"^[0-9]{1,12}(?:\.[0-9]{1,6})?$")


def trace_field(site: str, queue_id: str, now: float, **params: str) -> bytes:
    """The unsigned header line (CRLF included) a hop from `site` prepends to the message;
    `params` (printable, no `;` or space) follow the standard three."""
    return f"{TRACE_FIELD}: {_value(site, queue_id, now, params)}\r\n".encode("ascii")


def _value(site: str, queue_id: str, now: float, params: Mapping[str, str]) -> str:
    extra = "".join(f"; {k}={v}" for k, v in params.items() if v)
    return f"{site}; id={queue_id}; at={now:.3f}{extra}"


def content_digest(wire: bytes | Iterable[bytes]) -> bytes:
    """SHA-256 of the message as it goes on the wire below the trace field (`wire`: CRLF line
    ends, ending in CRLF, before dot-stuffing), whole or in pieces (a big message, read a
    chunk at a time)."""
    if isinstance(wire, bytes):
        return hashlib.sha256(wire).digest()
    digest = hashlib.sha256()
    for piece in wire:
        digest.update(piece)
    return digest.digest()


def signed_trace_field(
    site: str,
    queue_id: str,
    now: float,
    *,
    sign: Signer,
    to_site: str,
    sender: str,
    recipients: Iterable[str],
    digest: bytes,
    params: Mapping[str, str] | None = None,
) -> bytes:
    """The header line (CRLF included) for one SMTP transaction to the sibling site
    `to_site`, signed for its sender, the recipients the next hop accepted and the content's
    `digest`; `params` come before the signature, which covers them."""
    value = _value(site, queue_id, now, params or {})
    signature = sign(_payload(value.encode("ascii"), to_site, sender, recipients, digest))
    sig = base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")
    return f"{TRACE_FIELD}: {value}; sig={sig}\r\n".encode("ascii")


def _payload(
    value: bytes, to_site: str, sender: str, recipients: Iterable[str], digest: bytes
) -> bytes:
    """What is signed; every part on its own line (no address holds CR or LF), the
    recipients counted, so no two different inputs give the same bytes."""
    rcpts = sorted({r.lower() for r in recipients})
    return b"".join(
        [
            _CONTEXT,
            value,
            b"\n",
            to_site.encode("utf-8"),
            b"\n",
            sender.encode("utf-8"),
            b"\n",
            str(len(rcpts)).encode("ascii"),
            b"\n",
            *(r.encode("utf-8") + b"\n" for r in rcpts),
            digest,
        ]
    )


def verified_origin(
    stored: bytes,
    *,
    here: str,
    sender: str,
    recipients: Iterable[str],
    key_for: Callable[[str], Verifier | None],
    digest_from: Callable[[int], bytes] | None = None,
) -> Origin | None:
    """The origin of a message just received, if its hop's signature proves it; else None.

    `stored` is the message as this server keeps it: its own Received field first, then what
    the client sent, which must begin with a signed trace field made for this site (`here`).
    `key_for(site)` gives the key this site trusts for `site` (None: nothing is proven).
    A big message is not read whole: `stored` is then its start (its first two fields at
    least), and `digest_from(offset)` the `content_digest` of the message from `offset` to its
    end, read in pieces; it runs only for a field that could verify."""
    sent = _below_first_field(stored)
    if sent is None:
        return None
    match = _SIGNED.match(sent)
    if match is None:
        return None
    value, site = match.group(1).rstrip(b" \t"), match.group(2).decode("ascii")
    queue_id = _QUEUE_ID.search(value)
    key = key_for(site) if queue_id is not None else None
    if key is None or queue_id is None:
        return None
    signature = base64.urlsafe_b64decode(match.group(3) + b"==")
    below = len(stored) - len(sent) + match.end()  # where the content under the field starts
    digest = content_digest(stored[below:]) if digest_from is None else digest_from(below)
    if not key.verify(signature, _payload(value, here, sender, recipients, digest)):
        return None
    return Origin(site, queue_id.group(1).decode("ascii"))


def _below_first_field(stored: bytes) -> bytes | None:
    """What follows the first header field (with its folded lines), or None if there is no
    header field there (the server's own Received field is always first)."""
    end = stored.find(b"\r\n")
    if end < 0 or b":" not in stored[:end]:
        return None
    while stored[end + 2 : end + 3] in (b" ", b"\t"):  # a folded continuation line
        end = stored.find(b"\r\n", end + 2)
        if end < 0:
            return None
    return stored[end + 2 :]


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
