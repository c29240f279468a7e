"""Who may send what to whom: the IMS's answer at each SMTP step, as typed replies.

One job: decide MAIL and RCPT, and hand accepted messages to the durable spool. At RCPT the
recipient is routed (routing.router) and accepted when
- its address is a proxy address of any recipient in the directory (any site), or
- it is this site's directory-service mailbox (replication; signatures are checked later), or
- its domain is an internal-relay domain (unknown recipients go to the other mail system), an
  E-Mail Domain route (the article's "forward all messages for this domain to host") or
  another site's routing address, or
- the client is authenticated or in `trusted_networks`;
unknown users of the organisation's own domains get `550 5.1.1` (refused now, so no bounce
is ever sent to a forged sender), or `450 4.4.3` while replication from another site is
known to be behind (the user may exist there); but a server of another site (its published
listen address) gets its unknown users accepted, since it routed them here on what its
directory said and our queue waits for replication before it bounces; everything else `550 5.7.1` (no open relay). The percent
hack, bang paths, source routes and quoted local parts carrying an `@` are refused outright.
At DATA, a message beyond core.mailshape's bounds (MIME nesting, header sizes) is refused with
`550 5.6.0`, so no reader behind the queue meets one; a recipient that is a directory-service
mailbox gets NOTIFY=NEVER, so nothing sent to one ever causes a notice (docs/security.md).

A message from the Internet (not an authenticated or trusted client, not a sibling site's
server) is checked at the end of DATA by `edge_check` (mailauth.edge: SPF, DKIM, DMARC),
which refuses it or gives it back with its Authentication-Results field on top.

An accepted message whose hop trace proves it comes from a sibling site (`origin_of`,
routing.trace.verified_origin) is queued with that origin, so a resend is recognised and not
stored twice (queue.dedupe); the 250 then names the first copy's queue id.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from sitemail.core.address import DSA_LOCAL_PART, parse_address
from sitemail.core.clock import Clock
from sitemail.core.envelope import Envelope, EnvelopeRecipient, Notify
from sitemail.core.errors import InvalidAddressError, MalformedMessageError
from sitemail.core.events import SmtpAccepted, emit
from sitemail.core.mailshape import check_structure, check_structure_chunks
from sitemail.core.reply import Reply
from sitemail.directory import Directory
from sitemail.queue.content import Content
from sitemail.queue.model import QueueId
from sitemail.queue.records import NewMessage, new_queue_id
from sitemail.queue.spool import Spool
from sitemail.routing.route import ACCEPTED_RULES, Rule, Transport
from sitemail.routing.router import Router
from sitemail.routing.trace import Origin
from sitemail.smtp.engine import SessionInfo

__all__ = ["ImsPolicy"]

log = logging.getLogger("sitemail.smtp")

OK_SENDER = Reply(250, "2.1.0", "Sender ok")
OK_RECIPIENT = Reply(250, "2.1.5", "Recipient ok")
RELAY_DENIED = Reply(
    550, "5.7.1", "Relaying denied: this server accepts mail only for its organisation"
)
ROUTING_CHARS = Reply(550, "5.7.1", "Percent hack and bang paths are not accepted")


class ImsPolicy:
    """The Internet Mail Service's SMTP policy for one site."""

    def __init__(
        self,
        directory: Directory,
        router: Router,
        spool: Spool,
        clock: Clock,
        *,
        trusted_networks: Sequence[str] = (),
        origin_of: Callable[[Envelope, Content], Origin | None] | None = None,
        edge_check: Callable[[Envelope, Content], Awaitable[Reply | Content]] | None = None,
    ) -> None:
        self._directory = directory
        self._router = router
        self._spool = spool
        self._clock = clock
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in trusted_networks]
        self._origin_of = origin_of
        self._edge_check = edge_check  # SPF/DKIM/DMARC on mail from the Internet (mailauth)

    def is_trusted(self, peer_ip: str) -> bool:
        try:
            address = ipaddress.ip_address(peer_ip)
        except ValueError:
            return False
        return any(address in net for net in self._trusted)

    async def check_connect(self, peer_ip: str) -> Reply | None:
        del peer_ip
        return None

    async def check_mail(self, session: SessionInfo, sender: str) -> Reply:
        del session
        if sender == "":
            return OK_SENDER  # the null reverse-path of bounces
        try:
            parse_address(sender)
        except InvalidAddressError as exc:
            return Reply(553, "5.1.7", f"Bad sender address: {exc.message}")
        return OK_SENDER

    async def check_rcpt(self, session: SessionInfo, recipient: EnvelopeRecipient) -> Reply:
        peer_ip, authenticated = session.peer_ip, bool(session.authenticated_user)
        try:
            address = parse_address(recipient.address)
        except InvalidAddressError as exc:
            return Reply(553, "5.1.3", f"Bad recipient address: {exc.message}")
        if address.has_routing_characters:
            return ROUTING_CHARS
        route = self._router.route(str(address))
        if route.rule in ACCEPTED_RULES:
            return OK_RECIPIENT  # the organisation's own recipients and domains
        if route.rule is Rule.AUTHORITATIVE and self._router.is_sibling(peer_ip):
            return OK_RECIPIENT  # another site's mail: our queue waits for replication
        if route.transport is Transport.REJECT:
            code = 550 if route.status.startswith("5.1.1") else 553
            return Reply(code, route.status, f"<{address}>: {route.reason}")
        if route.transport is Transport.DEFER and route.rule is Rule.AUTHORITATIVE:
            return Reply(450, route.status, f"<{address}>: {route.reason}; try again later")
        if authenticated or self.is_trusted(peer_ip):
            return OK_RECIPIENT
        return RELAY_DENIED

    async def _origin(self, envelope: Envelope, content: Content) -> Origin | None:
        """The sibling site's proven origin, if any; a fault here only means "none". A big
        message's digest reads the whole spool file: in a thread."""
        if self._origin_of is None:
            return None
        try:
            if content.in_memory:
                return self._origin_of(envelope, content)
            return await asyncio.to_thread(self._origin_of, envelope, content)
        except Exception:
            log.exception("checking the trace of a message failed; stored without its origin")
            return None

    def _from_internet(self, envelope: Envelope) -> bool:
        """Whether the client is outside: not authenticated, not trusted, not a sibling
        site's server (siblings trust the edge that checked the message first)."""
        peer = envelope.client_address
        if all(_is_dsa(r) for r in envelope.recipients):
            return False  # replication mail: its own signatures prove it (replication.codec)
        return not (
            envelope.authenticated_as or self.is_trusted(peer) or self._router.is_sibling(peer)
        )

    def new_queue_id(self) -> str:
        """Allocated before acceptance, so the Received header can name it."""
        return new_queue_id(self._clock.now())

    async def accept(self, envelope: Envelope, content: Content, *, queue_id: str) -> Reply:
        """Queue the message durably; the 250 names the queue id (failures raise: 451).
        A message beyond core.mailshape's bounds is refused (550 5.6.0), unless it is only for
        directory-service mailboxes: the replication codec reads those with the same bounds,
        and drops and counts what it refuses (`replication status` shows the attacks).
        A big message (behind its spool file) is read in chunks for both checks, in a thread."""
        if not all(_is_dsa(r) for r in envelope.recipients):
            # In a thread: 0.1 s for the worst shape of a 30 MB message (bench/mailshape.py).
            refused = await asyncio.to_thread(_shape_refusal, content)
            if refused is not None:
                return refused
        if self._edge_check is not None and self._from_internet(envelope):
            checked = await self._edge_check(envelope, content)
            if isinstance(checked, Reply):
                return checked
            content = checked
        origin = await self._origin(envelope, content)
        queue_id = await self._spool.enqueue(
            NewMessage(
                _no_notices_for_dsa(envelope), content, queue_id=QueueId(queue_id), origin=origin
            )
        )
        emit(
            SmtpAccepted(
                queue_id,
                envelope.client_address,
                envelope.sender,
                len(envelope.recipients),
                content.size,
                origin.site if origin is not None else "",
                replication=all(_is_dsa(r) for r in envelope.recipients),
            )
        )
        return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")


def _is_dsa(recipient: EnvelopeRecipient) -> bool:
    return recipient.address.rpartition("@")[0].lower() == DSA_LOCAL_PART


def _shape_refusal(content: Content) -> Reply | None:
    """Blocking: a big message is read from its spool file a chunk at a time."""
    try:
        if content.in_memory:
            check_structure(content.whole())
        else:
            check_structure_chunks(content.chunks())
    except MalformedMessageError as exc:
        return Reply(exc.smtp_code, exc.smtp_enhanced, f"Message refused: {exc.message}")
    return None


def _no_notices_for_dsa(envelope: Envelope) -> Envelope:
    """NOTIFY=NEVER for directory-service mailboxes: replication mail comes from the null
    sender, and whatever becomes of a message to one (refused, dropped, expired) must never
    send a notice to the sender it names, a forged one as often as not."""
    recipients = tuple(
        replace(r, notify=frozenset({Notify.NEVER})) if _is_dsa(r) else r
        for r in envelope.recipients
    )
    if recipients == envelope.recipients:
        return envelope
    return replace(envelope, recipients=recipients)
