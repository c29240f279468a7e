"""Replication messages: the signed payload and its MIME envelope, both ways.

One job: turn a request or an answer into the bytes of a mail message signed by the sending
site, and turn received bytes back into a verified payload, or refuse them with a
`ReplicationRejected` naming why. Nothing is trusted before the signature checks out against
the key pinned for the claimed origin.

Wire form: a MIME message to the peer's directory-service address with one part,
`application/x-sitemail-replication+json`, holding `{"payload": <base64 of the canonical
JSON>, "signature": <base64 Ed25519 signature over those exact bytes>}`. The payload always
carries `type`, `org`, `origin`, `target`, `seq` (per sender, strictly increasing) and
`expires` (epoch seconds), so a message cannot be replayed, redirected to another site or
used after it expires. Canonical JSON = sorted keys, no spaces, UTF-8: the signed bytes are
the transmitted bytes (no re-serialisation on the receiving side).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid
from enum import StrEnum
from typing import Any

from sitemail.replication.keys import PublicKey, SiteKey

__all__ = [
    "CONTENT_TYPE",
    "DSA_LOCAL_PART",
    "MessageType",
    "ReplicationMessage",
    "ReplicationRejected",
    "canonical",
    "decode_message",
    "encode_message",
]

CONTENT_TYPE = "application/x-sitemail-replication+json"
DSA_LOCAL_PART = "sitemail-dsa"  # the directory-service mailbox of every site (Exchange's DSA)
MAX_MESSAGE = 32 * 1024 * 1024
_REQUIRED = {"type": str, "org": str, "origin": str, "target": str, "seq": int, "expires": int}


class MessageType(StrEnum):
    REQUEST = "request"
    ANSWER = "answer"


class ReplicationRejected(Exception):  # noqa: N818 - an outcome named for the log, not a fault
    """A replication message that must change nothing; `reason` is logged and counted."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ReplicationMessage:
    """A verified (or to-be-signed) replication payload."""

    type: MessageType
    org: str
    origin: str
    target: str
    seq: int
    expires: int
    body: Mapping[str, Any]

    def as_payload(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "org": self.org,
            "origin": self.origin,
            "target": self.target,
            "seq": self.seq,
            "expires": self.expires,
            "body": dict(self.body),
        }


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode_message(
    message: ReplicationMessage, key: SiteKey, *, sender: str, recipient: str, now: float
) -> bytes:
    """The complete RFC 5322 message, ready to be queued."""
    payload = canonical(message.as_payload())
    envelope = {
        "payload": base64.b64encode(payload).decode("ascii"),
        "signature": base64.b64encode(key.sign(payload)).decode("ascii"),
    }
    mail = EmailMessage(policy=SMTP_POLICY)
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = (
        f"Directory replication {message.type}: {message.origin} -> {message.target} #{message.seq}"
    )
    mail["Date"] = formatdate(now, usegmt=True)
    mail["Message-ID"] = make_msgid("repl", domain=sender.rpartition("@")[2] or None)
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Sitemail-Replication"] = message.type.value
    mail.set_content(
        json.dumps(envelope, indent=0).encode(),
        maintype="application",
        subtype="x-sitemail-replication+json",
        cte="7bit",
    )
    return mail.as_bytes()


def _field(payload: Mapping[str, Any], name: str, kind: type) -> Any:
    value = payload.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ReplicationRejected("malformed", f"field {name!r} missing or not {kind.__name__}")
    return value


def _extract(raw: bytes) -> tuple[bytes, bytes]:
    if len(raw) > MAX_MESSAGE:
        raise ReplicationRejected("malformed", "message too large")
    mail = BytesParser(policy=SMTP_POLICY).parsebytes(raw)
    part = next((p for p in mail.walk() if p.get_content_type() == CONTENT_TYPE), None)
    if part is None:
        raise ReplicationRejected("malformed", f"no {CONTENT_TYPE} part")
    try:
        data = part.get_payload(decode=True)
        outer = json.loads(data) if isinstance(data, bytes) else {}
        payload = base64.b64decode(outer["payload"], validate=True)
        signature = base64.b64decode(outer["signature"], validate=True)
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise ReplicationRejected("malformed", f"bad envelope: {exc.__class__.__name__}") from exc
    return payload, signature


def decode_message(
    raw: bytes,
    *,
    key_for: Callable[[str], PublicKey | None],
    org: str,
    site: str,
    now: float,
) -> ReplicationMessage:
    """Verify and parse; raises ReplicationRejected (malformed, unknown-origin, bad-signature,
    wrong-organisation, misaddressed, expired). Replays are the caller's check (it owns the
    high-water marks)."""
    payload, signature = _extract(raw)
    try:
        unverified = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReplicationRejected("malformed", "payload is not JSON") from exc
    if not isinstance(unverified, dict):
        raise ReplicationRejected("malformed", "payload is not an object")
    origin = _field(unverified, "origin", str)
    key = key_for(origin)
    if key is None:
        raise ReplicationRejected("unknown-origin", f"no key pinned or learned for site {origin!r}")
    if not key.verify(signature, payload):
        raise ReplicationRejected("bad-signature", f"signature does not verify with {origin}'s key")
    fields = {name: _field(unverified, name, kind) for name, kind in _REQUIRED.items()}
    body = unverified.get("body")
    if not isinstance(body, dict):
        raise ReplicationRejected("malformed", "body missing")
    try:
        kind = MessageType(fields["type"])
    except ValueError as exc:
        raise ReplicationRejected("malformed", f"unknown type {fields['type']!r}") from exc
    if fields["org"] != org:
        raise ReplicationRejected("wrong-organisation", f"{fields['org']!r} is not {org!r}")
    if fields["target"] != site:
        raise ReplicationRejected(
            "misaddressed", f"meant for {fields['target']!r}, this is {site!r}"
        )
    if fields["expires"] < now:
        raise ReplicationRejected("expired", f"expired at {fields['expires']}")
    return ReplicationMessage(
        kind, fields["org"], origin, fields["target"], fields["seq"], fields["expires"], body
    )
