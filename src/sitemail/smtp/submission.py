"""Message submission (RFC 6409) for the site's own users: 587 with STARTTLS, 465 implicit TLS.

One job: the policy of the submission listeners. The engine (smtp/engine.py) requires AUTH
before MAIL on these listeners and offers AUTH only over TLS; this policy then allows an
authenticated user to send only as themselves:
- the envelope sender must be one of the user's own addresses (any case), never <>;
- every address in the From header (and Sender, when present) must be one of them too;
- recipients are decided as for inbound mail, except that any outside address is allowed
  (the user is authenticated), and the message goes through the queue like any other.
Refusals are 553 5.7.1 (sender) and 550 5.7.1 (From), naming the offending address.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import email.utils

from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.core.reply import Reply
from sitemail.directory import Directory
from sitemail.queue.content import Content
from sitemail.smtp.engine import SessionInfo
from sitemail.smtp.policy import ImsPolicy

__all__ = ["SubmissionPolicy", "header_addresses"]

_NOT_AUTHENTICATED = Reply(530, "5.7.0", "Authentication required")
_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def header_addresses(content: bytes, name: str) -> list[str] | None:
    """The addresses of header `name` (all occurrences), or None if one cannot be parsed."""
    head = content.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    message = _HEADER_PARSER.parsebytes(head)
    values = message.get_all(name) or []
    pairs = email.utils.getaddresses([str(v) for v in values])
    if any(not address or "@" not in address for _, address in pairs):
        return None
    return [address for _, address in pairs]


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
        for header in ("From", "Sender"):
            found = header_addresses(content.head, header)
            if found is None:
                return Reply(550, "5.7.1", f"Message refused: cannot read its {header} header")
            if header == "From" and not found:
                return Reply(550, "5.7.1", "Message refused: it has no From header")
            for address in found:
                if address.lower() not in own:
                    return Reply(
                        550,
                        "5.7.1",
                        f"Message refused: {header} address <{address}> is not one of your "
                        "addresses",
                    )
        return await self._inbound.accept(envelope, content, queue_id=queue_id)

    def _addresses(self, guid: str) -> frozenset[str]:
        if not guid:
            return frozenset()
        with self._directory.store.read() as conn:
            mailbox = Directory.by_guid_in(conn, guid)
        if mailbox is None or mailbox.is_deleted:
            return frozenset()
        return frozenset(p.key for p in mailbox.proxies if p.type == "SMTP")
