"""Message submission (RFC 6409) for the site's own users: 587 with STARTTLS, 465 implicit TLS.

One job: the policy of the submission listeners. The engine (smtp/engine.py) requires AUTH
before MAIL on these listeners and offers AUTH only over TLS; this policy then allows an
authenticated user to send only as themselves:
- the envelope sender must be one of the user's own addresses (any case), never <>;
- the message is read as a mail client will read it (core.mailshape.read_header): every header
  line is a field written `Name:` or the continuation of one; a line without a colon, white
  space before a colon (`From :`), a bare CR or a NUL is refused with 550 5.6.0, since clients
  disagree on such lines and one of them could show a From nobody checked;
- exactly one From field and at most one Sender (RFC 5322 section 3.6), each readable the same
  way by both of Python's address parsers (the lenient one, and the RFC 5322 one, which must
  find no defect), else 550 5.6.0; every address either reads in them must be one of the
  user's own, else 550 5.7.1;
- recipients are decided as for inbound mail, except that any outside address is allowed
  (the user is authenticated), and the message goes through the queue like any other.
Refusals are 553 5.7.1 (sender), 550 5.7.1 (a From or Sender address not the user's) and
550 5.6.0 (a header that cannot be read safely), naming the offending address or line.
"""

from __future__ import annotations

import asyncio
import email.utils
from email.errors import NonASCIILocalPartDefect
from email.policy import default as rfc5322

from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.core.errors import MalformedMessageError
from sitemail.core.mailshape import BOUNDS, HeaderField, read_header
from sitemail.core.reply import Reply
from sitemail.directory import Directory
from sitemail.queue.content import Content, header_end
from sitemail.smtp.engine import SessionInfo
from sitemail.smtp.policy import ImsPolicy

__all__ = ["SubmissionPolicy", "header_refusal"]

_NOT_AUTHENTICATED = Reply(530, "5.7.0", "Authentication required")
_MAX_ADDRESS_FIELD = 4096  # characters of a From or Sender field: a few addresses at most


def _malformed(text: str) -> Reply:
    return Reply(550, "5.6.0", f"Message refused: {text}")


def header_refusal(content: bytes, own: frozenset[str]) -> Reply | None:
    """Why a message whose sender may use the addresses `own` is refused, or None."""
    try:
        fields = read_header(content)
    except MalformedMessageError as exc:
        return _malformed(exc.message)
    froms = [f for f in fields if f.name == "from"]
    senders = [f for f in fields if f.name == "sender"]
    if len(froms) != 1:
        return _malformed(
            f"a message has exactly one From field (RFC 5322 section 3.6); this one has "
            f"{len(froms)}"
        )
    if len(senders) > 1:
        return _malformed(f"a message has at most one Sender field; this one has {len(senders)}")
    for field in froms + senders:
        header = field.name.title()
        addresses = _addresses(field)
        if addresses is None:
            return _malformed(f"its {header} field cannot be read as a list of addresses")
        if header == "From" and not addresses:
            return _malformed("its From field holds no address")
        for address in addresses:
            if address.lower() not in own:
                return Reply(
                    550,
                    "5.7.1",
                    f"Message refused: {header} address <{address}> is not one of your addresses",
                )
    return None


def _addresses(field: HeaderField) -> list[str] | None:
    """Every address either of Python's parsers reads in the field; None when they cannot
    both read it cleanly (an address without @, an RFC 5322 defect)."""
    value = field.value.strip()
    if len(value) > _MAX_ADDRESS_FIELD:
        return None
    lenient = [address for _, address in email.utils.getaddresses([value])]
    if any(not address or "@" not in address for address in lenient):
        return None
    try:
        parsed = rfc5322.header_factory(field.name, value)
    except Exception:  # the parser failing on hostile input: a refusal
        return None
    if any(not isinstance(d, NonASCIILocalPartDefect) for d in parsed.defects):
        return None  # (a UTF-8 local part is no defect under RFC 6532, SMTPUTF8)
    strict = [a.addr_spec for a in getattr(parsed, "addresses", ())]
    return list(dict.fromkeys(lenient + strict))


async def _header_of(content: Content) -> bytes:
    """The message's start, its header section whole (up to the bound `read_header` refuses
    beyond): a big message's header longer than its `head` is read from its spool file."""
    if content.in_memory or header_end(content.head) > 0:
        return content.head
    return await asyncio.to_thread(content.first, BOUNDS.header_bytes + 4)


class SubmissionPolicy:
    """The SMTP policy of the submission listeners, on top of the site's inbound policy."""

    def __init__(self, inbound: ImsPolicy, directory: Directory) -> None:
        self._inbound = inbound
        self._directory = directory

    async def check_connect(self, peer_ip: str) -> Reply | None:
        return await self._inbound.check_connect(peer_ip)

    async def check_mail(self, session: SessionInfo, sender: str) -> Reply:
        if not session.authenticated_user:
            return _NOT_AUTHENTICATED
        if sender.lower() not in session.addresses:
            return Reply(
                553,
                "5.7.1",
                f"Sender address <{sender}> is not one of your addresses",
            )
        return Reply(250, "2.1.0", "Sender ok")

    async def check_rcpt(self, session: SessionInfo, recipient: EnvelopeRecipient) -> Reply:
        if not session.authenticated_user:
            return _NOT_AUTHENTICATED
        return await self._inbound.check_rcpt(session, recipient)

    def new_queue_id(self) -> str:
        return self._inbound.new_queue_id()

    async def accept(self, envelope: Envelope, content: Content, *, queue_id: str) -> Reply:
        own = await asyncio.to_thread(self._addresses, envelope.authenticated_as)
        if not own:
            return _NOT_AUTHENTICATED
        refused = header_refusal(await _header_of(content), own)
        if refused is not None:
            return refused
        return await self._inbound.accept(envelope, content, queue_id=queue_id)

    def _addresses(self, guid: str) -> frozenset[str]:
        if not guid:
            return frozenset()
        with self._directory.store.read() as conn:
            mailbox = Directory.by_guid_in(conn, guid)
        if mailbox is None or mailbox.is_deleted:
            return frozenset()
        return frozenset(p.key for p in mailbox.proxies if p.type == "SMTP")
