"""The replication protocol: requests, answers, and what each side does with them.

One job: the pull protocol of DESIGN.md section 3 between this site and its peers, carried by
the normal queue. Every step runs inside the caller's write transaction, so a received message
is applied, its successor queued and its own delivery recorded in one commit (a crash replays
the whole step or none of it).

- Request (requester -> peer): `{"ncs": {nc: usn held}, "exclude": [...], "full": bool, "key",
  "routing_address", "bridgehead"}`. The peer answers for the naming contexts named and, so
  replication is transitive, for every other one it holds that is not excluded (the requester's
  own and those of its other direct peers, which it pulls directly).
- Answer (peer -> requester): `{"in_reply_to": seq, "ncs": {nc: {"from", "to", "high"}},
  "objects": [...], "more": bool}`: at most 512 objects, oldest USN first per naming context.
  The requester applies them (apply.py), raises each watermark to `to` when the answer starts
  at or below what it holds, and while `more` is set asks again from where the answer stopped.
- Speed in a long pull (docs/replication.md, Figures): the requester asks for the next batch
  before applying an answer (`ask_ahead`); the answering side reads the batch it will most
  likely be asked for next while its answer travels (`_prefetch`, used only for exactly those
  cursors); what a step queues is handed to the queue manager in memory (`Outbox`).
- One request outstanding per peer: a scheduled or "now" request is not sent while one is
  unanswered (until `request_timeout`), so a peer that never answers (the article's one-sided
  connector) does not pile requests up; it shows as waiting.
- Messages are signed (codec.py) and verified against the connector's pinned key, or a key
  learned through a verified replica; a sequence number at or below the sender's high-water
  mark (kept per message type) is a replay. Rejected messages change nothing but a counter.
- A request from a site without a connector here is held as a pending partner.
- Tracking across sites (tracking.py, docs/tracking.md): a track-query for one Message-ID is
  answered with this site's tracking events for it, to the asking site's directory-service
  address as our directory knows it; like pings, tracking messages change no watermark.
Replication mail travels from the null sender, so it can never cause a DSN.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, TypeVar

import orjson
from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.exc import SQLAlchemyError

from sitemail.config import ReplicationConfig
from sitemail.core.clock import Clock
from sitemail.core.envelope import Envelope, EnvelopeRecipient, Notify
from sitemail.core.errors import InvalidValueError, NotFoundError, StoreError
from sitemail.directory import Directory, ObjectKind
from sitemail.directory.claims import move_aside_lost_claims
from sitemail.queue.admin import message_events
from sitemail.queue.content import Content
from sitemail.queue.model import QueuedMessage, QueuedRecipient, QueueId
from sitemail.queue.records import (
    NewMessage,
    insert_messages,
    new_queue_id,
    retry_directory_deferrals,
)
from sitemail.replication import state, tracking
from sitemail.replication.apply import (
    Checked,
    WireObject,
    apply_objects,
    check_objects,
    objects_since,
)
from sitemail.replication.codec import (
    DSA_LOCAL_PART,
    MessageType,
    ReplicationMessage,
    ReplicationRejected,
    canonical,
    claimed_origin,
    decode_message,
    decode_self_signed,
    encode_message,
)
from sitemail.replication.connectors import Connector, list_connectors
from sitemail.replication.forget import removed_sites
from sitemail.replication.keys import PublicKey, SiteKey, parse_public_key
from sitemail.store.tables import dir_object, site_usn

__all__ = [
    "BATCH",
    "TRANSIENT",
    "Outbox",
    "Received",
    "Replicator",
    "RequestOutcome",
    "dsa_address",
    "source_network",
]

log = logging.getLogger("sitemail.replication")

BATCH = 512  # objects per answer, as Exchange's directory service
_ADDRESSING_FAULTS = frozenset({"expired", "wrong-organisation", "misaddressed"})
_MAX_HEALS = 3
MAX_PENDING = 100  # held requests from unconfigured sites: a flood cannot grow the table
PENDING_PER_NETWORK = 10  # of them from strangers of one network (source_network)
# Faults of the store or the machine, not of the message: the message is retried (deferred)
# when one of these ends its processing; any other fault drops it (Replicator.drop).
TRANSIENT: tuple[type[Exception], ...] = (SQLAlchemyError, OSError, StoreError)


def source_network(address: str) -> str:
    """The network a client address belongs to for the pending partners' limit: an IPv4
    /24 or an IPv6 /64 (what one outsider easily holds), "" when unknown."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def dsa_address(routing_domain: str) -> str:
    return f"{DSA_LOCAL_PART}@{routing_domain}"


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    peer: str
    sent: bool
    seq: int  # the request sent, or the one still outstanding
    detail: str


_TOKEN = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class Received:
    """What became of one received replication message (for the tracking log)."""

    outcome: str  # answered / applied / pending / rejected
    origin: str
    detail: str


@dataclass(slots=True)
class Outbox:
    """The replication mail one transaction queues, for the queue manager to start at once
    when it commits (as the spool hands over new mail), instead of at its next pass.

    `claimed`: queue ids the caller claimed from the manager before the transaction (so no
    pass can start the message too); each message queued takes the next one. A message
    beyond them gets a fresh id and is left to a pass (`overflow`)."""

    claimed: list[QueueId]
    written: list[tuple[QueuedMessage, Content, list[QueuedRecipient]]] = field(
        default_factory=list
    )
    overflow: int = 0
    sent: list[tuple[str, str, int]] = field(default_factory=list)  # (peer, type, seq)

    def next_id(self, now: float) -> QueueId:
        if self.claimed:
            return self.claimed.pop(0)
        self.overflow += 1
        return new_queue_id(now)


_T = TypeVar("_T")


class _Collected(NamedTuple):
    """A batch to answer with: its objects already in their wire form, canonical JSON (an
    orjson.Fragment, written into the answer's payload as is), so that a batch read ahead
    in the reading thread leaves the answer's transaction nothing to do per object."""

    objects: orjson.Fragment
    size: int  # objects in it
    ncs: dict[str, dict[str, int]]  # per naming context: from, to, high
    more: bool


_PREFETCH_FRESH = 5.0  # seconds a prefetched batch may wait for its request
_PREFETCH_WAIT = 1.0  # seconds a request waits for its batch still being read, at most
# Read for every message (state.py says why they are built once)
_SITE_USN = select(site_usn.c.usn).where(site_usn.c.site == bindparam("p_site"))
_SITES = select(dir_object.c.site).where(dir_object.c.kind == str(ObjectKind.SITE))
_HIGHEST_USN = select(func.max(dir_object.c.usn_changed)).where(
    dir_object.c.site == bindparam("p_nc")
)


@dataclass(slots=True)
class _Prefetch:
    cursors: dict[str, int]
    future: Future[_Collected] | None  # None until started
    at: float


class Replicator:
    """This site's side of replication."""

    def __init__(
        self,
        directory: Directory,
        clock: Clock,
        key: SiteKey,
        settings: ReplicationConfig,
        *,
        batch: int = BATCH,
    ) -> None:
        self.directory = directory
        self.clock = clock
        self.key = key
        self.settings = settings
        self.batch = batch
        self._heals: dict[str, int] = {}  # re-requests after a gap, per peer, in a row
        self._local = threading.local()  # the Outbox of the step running in this thread
        self._routing_domain: tuple[int | None, str] | None = None  # (site USN, domain)
        self._prefetcher: ThreadPoolExecutor | None = None  # made when first needed
        # By peer: noted in the writer's thread, started on the loop (one step after the other)
        self._prefetches: dict[str, _Prefetch] = {}
        org = directory.org()
        self.site = org.local_site
        self.server = org.local_server
        self.org = org.name

    # -- identities and keys ----------------------------------------------------------------

    def routing_domain(self, conn: Connection | None = None) -> str:
        """Our directory-service mailbox's domain. Within a transaction (`conn`), the last
        one read is reused while this site's USN is unchanged (no object of ours changed):
        reading it costs a few directory reads, and every message we queue names it."""
        if conn is None:
            return self.directory.routing_domain()
        usn = conn.execute(_SITE_USN, {"p_site": self.site}).scalar()
        cached = self._routing_domain
        if cached is None or cached[0] != usn:
            cached = self._routing_domain = (usn, self.directory.routing_domain())
        return cached[1]

    def key_for(self, connectors: Mapping[str, Connector]) -> Callable[[str], PublicKey | None]:
        def lookup(origin: str) -> PublicKey | None:
            connector = connectors.get(origin)
            if connector is not None:
                return parse_public_key(connector.peer_key)
            learned = self._learned_key(origin)
            return parse_public_key(learned) if learned else None

        return lookup

    def _learned_key(self, origin: str) -> str:
        sites = self.directory.list_objects(ObjectKind.SITE, site=origin)
        return str(sites[0].attrs.get("public_key", "")) if sites else ""

    # -- sending ----------------------------------------------------------------------------

    def _queue(self, conn: Connection, kind: MessageType, target: str, to: str, body: Any) -> int:
        now = self.clock.now()
        seq = state.next_seq(conn)
        message = ReplicationMessage(
            kind,
            self.org,
            self.site,
            target,
            seq,
            int(now + self.settings.message_ttl),
            body,
        )
        raw = encode_message(
            message, self.key, sender=dsa_address(self.routing_domain(conn)), recipient=to, now=now
        )
        envelope = Envelope("", (EnvelopeRecipient(to, frozenset({Notify.NEVER})),))
        outbox: Outbox | None = getattr(self._local, "outbox", None)
        queue_id = outbox.next_id(now) if outbox is not None else new_queue_id(now)
        content = Content.of(raw)
        [(queued, recipients)] = insert_messages(
            conn, [(queue_id, NewMessage(envelope, content))], now, self.site
        )
        if outbox is not None and outbox.overflow == 0:
            outbox.written.append((queued, content, recipients))
        if outbox is not None:
            outbox.sent.append((target, str(kind), seq))
        return seq

    def collecting(self, outbox: Outbox, step: Callable[[], _T]) -> _T:
        """Run `step` (a transaction's work, in this thread) with the mail it queues written
        down in `outbox`."""
        self._local.outbox = outbox
        try:
            return step()
        finally:
            self._local.outbox = None

    def held_ncs(self, conn: Connection) -> set[str]:
        """Naming contexts held here: every NC's site object has its first USN, so it comes
        first; the watermarks add NCs being pulled (cheap: no scan of all objects)."""
        return {r[0] for r in conn.execute(_SITES)} | set(state.watermarks(conn))

    def _request_body(
        self,
        conn: Connection,
        connector: Connector,
        cursors: Mapping[str, int],
        full: bool,
        direct: set[str],
    ) -> dict[str, Any]:
        removed = removed_sites(conn, self.site)  # never pulled again (replication/forget.py)
        exclude = sorted({self.site} | (direct - {connector.site}) | removed)
        known = (self.held_ncs(conn) | {connector.site}) - set(exclude)
        marks = state.watermarks(conn)
        ncs = {
            nc: cursors.get(nc, 0 if full else marks.get(nc, 0))
            for nc in sorted(known | set(cursors))
        }
        return {
            "ncs": {nc: usn for nc, usn in ncs.items() if nc not in exclude},
            "exclude": exclude,
            "full": full,
            "key": self.key.public.token,
            "routing_address": self.routing_domain(conn),
            "bridgehead": self.server,
        }

    def request(
        self, conn: Connection, connector: Connector, *, full: bool = False, force: bool = False
    ) -> RequestOutcome:
        """Ask `connector.site` for what we miss, unless a request to it is still unanswered."""
        now = self.clock.now()
        peer = state.get_peer(conn, connector.site)
        if peer.outstanding_seq is not None and not (force or full):
            age = now - float(peer.outstanding_at or 0.0)
            if age < self.settings.request_timeout:
                return RequestOutcome(
                    connector.site,
                    False,
                    int(peer.outstanding_seq),
                    f"waiting: request #{peer.outstanding_seq} sent {age:.0f} s ago is unanswered",
                )
        return self._send_request(conn, connector, {}, full=full)

    def _send_request(
        self,
        conn: Connection,
        connector: Connector,
        cursors: Mapping[str, int],
        *,
        full: bool,
        direct: set[str] | None = None,
    ) -> RequestOutcome:
        """Queue a request; `direct`: our connectors' sites, when the caller has them."""
        now = self.clock.now()
        if direct is None:
            direct = {c.site for c in list_connectors(self.directory)}
        body = self._request_body(conn, connector, cursors, full, direct)
        seq = self._queue(
            conn, MessageType.REQUEST, connector.site, dsa_address(connector.routing_address), body
        )
        state.update_peer(
            conn,
            connector.site,
            outstanding_seq=seq,
            outstanding_at=now,
            outstanding_full=full,
            last_request_at=now,
            bump={"requests_sent": 1},
        )
        kind = "refresh-all request" if full else "request"
        return RequestOutcome(connector.site, True, seq, f"{kind} #{seq} queued")

    # -- receiving --------------------------------------------------------------------------

    def connectors(self) -> dict[str, Connector]:
        """Our connectors by peer site. The transport reads them once per message it takes
        up and hands them to each step (`verify`, `ask_ahead`, `receive`): a directory read
        costs a millisecond, and a full pull takes up some 200 answers."""
        return {c.site: c for c in list_connectors(self.directory)}

    def verify(
        self, raw: bytes, connectors: Mapping[str, Connector] | None = None
    ) -> ReplicationMessage:
        """Decode and check the signature (ReplicationRejected otherwise); no state changes."""
        if connectors is None:
            connectors = self.connectors()
        try:
            return decode_message(
                raw,
                key_for=self.key_for(connectors),
                org=self.org,
                site=self.site,
                now=self.clock.now(),
            )
        except ReplicationRejected:
            raise
        except TRANSIENT:
            raise
        except Exception as exc:  # a fault on hostile input: refused, never retried
            raise ReplicationRejected("malformed", f"unreadable: {exc.__class__.__name__}") from exc

    @staticmethod
    def wire_objects(message: ReplicationMessage) -> Checked | None:
        """An answer's objects checked, with their rows made ready (`check_objects`), or
        None for anything else. The transport makes them in its verifying thread, before
        the store's writer takes the answer up: the writer is the busy side of a long pull."""
        raw = message.body.get("objects")
        if message.type is not MessageType.ANSWER or not isinstance(raw, list) or len(raw) > BATCH:
            return None
        return check_objects(raw)

    def receive(
        self,
        conn: Connection,
        raw: bytes,
        *,
        queue_id: str = "",
        verified: ReplicationMessage | None = None,
        connectors: Mapping[str, Connector] | None = None,
        checked: Checked | None = None,
        source: str = "",
    ) -> Received:
        """Verify (unless `verified` is given) and act on one message for our mailbox
        (`checked`: an answer's objects, from `wire_objects`, when the caller made them;
        `source`: the address of the SMTP client that handed it to us, "" if unknown)."""
        if connectors is None:
            connectors = self.connectors()
        try:
            message = verified or self.verify(raw, connectors)
        except ReplicationRejected as refused:
            claimed = claimed_origin(raw)
            if refused.reason != "unknown-origin":
                return self._reject(conn, refused.reason, claimed, queue_id, refused.detail)
            if claimed in removed_sites(conn, self.site):  # never held for the admin again
                detail = f"{refused.detail} (a site removed from the organisation here)"
                return self._reject(conn, refused.reason, claimed, queue_id, detail)
            return self._maybe_pending(conn, raw, queue_id, refused, source)
        if message.type in (MessageType.PING, MessageType.PONG):
            return self._take_ping(conn, message, queue_id)
        if message.type in (MessageType.TRACK_QUERY, MessageType.TRACK_ANSWER):
            return self._take_track(conn, message, queue_id)
        mark = "hw_request" if message.type is MessageType.REQUEST else "hw_answer"
        peer = state.get_peer(conn, message.origin)
        if message.seq <= int(getattr(peer, mark)):
            return self._reject(
                conn,
                "replay",
                message.origin,
                queue_id,
                f"{message.type} #{message.seq} at or below high-water mark {getattr(peer, mark)}",
            )
        connector = connectors.get(message.origin)
        if message.type is MessageType.REQUEST and connector is None:
            # Held, not taken: the high-water mark stays, so accepting it later answers it.
            return self._hold(conn, message, raw, verified=True, source=source)
        if message.type is MessageType.REQUEST:
            state.update_peer(conn, message.origin, hw_request=message.seq)
        else:
            state.update_peer(conn, message.origin, hw_answer=message.seq)
        if message.type is MessageType.REQUEST:
            assert connector is not None
            return self.serve(conn, message, connector)
        if connector is None:
            return self._reject(
                conn, "no-connector", message.origin, queue_id, "answer from a site we do not ask"
            )
        return self._take_answer(conn, message, connector, set(connectors), checked)

    def ask_ahead(
        self,
        conn: Connection,
        message: ReplicationMessage,
        connectors: Mapping[str, Connector] | None = None,
    ) -> bool:
        """For an answer that continues our outstanding request and says "more", queue the
        next request now, before the answer is applied, so the peer composes the next batch
        while we apply this one (the two sites work in parallel). Committed on its own: if we
        crash before applying, the answer is still queued and is applied when we restart, and
        the request already sent does not make another one (it is the outstanding one now)."""
        if message.type is not MessageType.ANSWER or message.body.get("more") is not True:
            return False
        if connectors is None:
            connectors = self.connectors()
        connector = connectors.get(message.origin)
        ranges = _ranges(message.body.get("ncs"))
        peer = state.get_peer(conn, message.origin)
        if connector is None or ranges is None or message.seq <= int(peer.hw_answer):
            return False
        if peer.outstanding_seq is None or peer.outstanding_seq != message.body.get("in_reply_to"):
            return False
        cursors = {nc: end for nc, (_, end, _) in ranges.items()}
        self._send_request(
            conn, connector, cursors, full=bool(peer.outstanding_full), direct=set(connectors)
        )
        return True

    def drop(self, conn: Connection, raw: bytes, queue_id: str, fault: Exception) -> Received:
        """A message whose processing failed on something other than the store (a fault its
        content triggers, which a retry would meet again): refused and counted as
        `unprocessable`, logged once with the fault, never retried into a notice."""
        origin = claimed_origin(raw)
        detail = f"processing failed: {fault.__class__.__name__}"
        log.error(
            "replication message refused: reason=unprocessable origin=%s queue_id=%s detail=%s",
            origin or "?",
            queue_id,
            detail,
            exc_info=fault,  # the one line, with what a bug report needs
        )
        state.record_rejection(
            conn,
            at=self.clock.now(),
            reason="unprocessable",
            origin=origin,
            queue_id=queue_id,
            detail=detail,
        )
        return Received("rejected", origin, f"unprocessable: {detail}")

    def _reject(
        self, conn: Connection, reason: str, origin: str, queue_id: str, detail: str
    ) -> Received:
        log.warning(
            "replication message refused: reason=%s origin=%s queue_id=%s detail=%s",
            reason,
            origin or "?",
            queue_id,
            detail,
        )
        state.record_rejection(
            conn,
            at=self.clock.now(),
            reason=reason,
            origin=origin,
            queue_id=queue_id,
            detail=detail,
        )
        return Received("rejected", origin, f"{reason}: {detail}")

    def _maybe_pending(
        self,
        conn: Connection,
        raw: bytes,
        queue_id: str,
        refused: ReplicationRejected,
        source: str,
    ) -> Received:
        try:
            message, _ = decode_self_signed(raw, org=self.org, site=self.site, now=self.clock.now())
        except ReplicationRejected as again:
            # A self-consistent request that is stale or meant for someone else says so;
            # anything else counts as what it is first: nobody here vouches for its sender.
            reason = again if again.reason in _ADDRESSING_FAULTS else refused
            return self._reject(conn, reason.reason, claimed_origin(raw), queue_id, reason.detail)
        if message.type is not MessageType.REQUEST:
            return self._reject(conn, refused.reason, message.origin, queue_id, refused.detail)
        return self._hold(conn, message, raw, verified=False, source=source)

    def _hold(
        self,
        conn: Connection,
        message: ReplicationMessage,
        raw: bytes,
        *,
        verified: bool,
        source: str,
    ) -> Received:
        now = self.clock.now()
        body = message.body
        network = source_network(source)
        held = state.get_pending(conn, message.origin)
        if held is None:
            refused = self._make_room(conn, message.origin, network, verified=verified)
            if refused is not None:
                return refused
        carried = str(body.get("key", ""))[:100]
        if held is not None and held.public_key != carried:
            # Never let a later stranger swap the key (or address) the admin is about to check.
            return self._reject(
                conn,
                "pending-key-changed",
                message.origin,
                "",
                "a request under this name carries another key than the one held",
            )
        if held is not None and held.state == "rejected":
            state.hold_pending(conn, replace(held, last_seen=now, request=raw))
            log.info("replication request from %s ignored: rejected by the admin", message.origin)
            return Received("pending", message.origin, "ignored: rejected pending partner")
        state.hold_pending(
            conn,
            state.Pending(
                origin=message.origin,
                state="pending",
                first_seen=now,
                last_seen=now,
                requests=1,
                public_key=carried,
                routing_address=str(body.get("routing_address", ""))[:255],
                bridgehead=str(body.get("bridgehead", ""))[:64],
                verified=verified,
                request=raw,
                source=network,
            ),
        )
        log.warning(
            "replication request from %s held: no connector to it here "
            "(sitemail replication pending accept %s)",
            message.origin,
            message.origin,
        )
        return Received("pending", message.origin, "held as a pending partner")

    def _make_room(
        self, conn: Connection, origin: str, network: str, *, verified: bool
    ) -> Received | None:
        """Room for a new pending partner, or its refusal. A stranger's (self-signed) request
        is refused when its network holds PENDING_PER_NETWORK entries already; when the
        table is full, the self-signed entry seen least recently gives way (counted as
        `pending-evicted`): a flood from a few networks cannot fill the table, and a newcomer
        always gets a place (one from many networks, kept up, can push it out again later:
        docs/replication.md, Pending partners)."""
        if not verified and state.count_pending_from(conn, network) >= PENDING_PER_NETWORK:
            return self._reject(
                conn,
                "too-many-pending",
                origin,
                "",
                f"{PENDING_PER_NETWORK} partners from {network or 'an unknown network'} "
                "wait already",
            )
        if state.count_pending(conn) < MAX_PENDING:
            return None
        victim = state.evictable_pending(conn)
        if victim is None:
            return self._reject(
                conn, "too-many-pending", origin, "", f"{MAX_PENDING} partners wait already"
            )
        state.drop_pending(conn, victim.origin)
        self._reject(
            conn,
            "pending-evicted",
            victim.origin,
            "",
            f"the table of {MAX_PENDING} pending partners is full; {origin} takes its place",
        )
        return None

    # -- pings: a round trip of real mail for `sitemail doctor` -----------------------------

    def ping(self, conn: Connection, site: str) -> str:
        """Queue a signed ping to `site`'s directory-service mailbox; returns its token.

        The site answers with a signed pong to ours: the round trip goes through both queues,
        the routing and SMTP in both directions, authenticated like all replication mail
        (Exchange's Test-Mailflow, which mails a server's system mailbox, does the same)."""
        routing = self._routing_address_of(site)
        if not routing:
            raise NotFoundError(f"no site {site!r} with a routing address is known here")
        token = uuid.uuid4().hex
        self._queue(conn, MessageType.PING, site, dsa_address(routing), {"token": token})
        return token

    def _routing_address_of(self, site: str) -> str:
        connector = {c.site: c for c in list_connectors(self.directory)}.get(site)
        if connector is not None:
            return connector.routing_address
        sites = self.directory.list_objects(ObjectKind.SITE, site=site)
        return str(sites[0].attrs.get("routing_domain", "")) if sites else ""

    def _take_ping(self, conn: Connection, message: ReplicationMessage, queue_id: str) -> Received:
        """Answer a verified ping with a pong to the sender's own directory-service mailbox
        (the address comes from our directory, never from the message: no reflection), or
        take a pong (the tracking log records it; the doctor looks for its token). Pings leave
        the high-water marks alone, so they cannot make a replication message look replayed;
        a replayed ping only makes one more pong before it expires."""
        token = message.body.get("token")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return self._reject(conn, "malformed", message.origin, queue_id, "ping without token")
        if message.type is MessageType.PONG:
            return Received("pong", message.origin, f"token {token}")
        routing = self._routing_address_of(message.origin)
        if not routing:
            return self._reject(
                conn, "no-connector", message.origin, queue_id, "ping from a site with no address"
            )
        self._queue(conn, MessageType.PONG, message.origin, dsa_address(routing), {"token": token})
        return Received("ponged", message.origin, f"token {token}")

    # -- message tracking across sites (docs/tracking.md) ------------------------------------

    def trackable_sites(self) -> dict[str, str]:
        """Every other site known here (replicated site objects and our connectors), each
        with "" when a track-query can go to it, else why not: only a site we can address
        and whose answer we can verify is asked."""
        connectors = {c.site: c for c in list_connectors(self.directory)}
        known = {o.site for o in self.directory.list_objects(ObjectKind.SITE)} | set(connectors)
        key_for = self.key_for(connectors)
        reasons: dict[str, str] = {}
        for site in sorted(known - {self.site}):
            try:
                key = key_for(site)
            except InvalidValueError:
                key = None
            if not self._routing_address_of(site):
                reasons[site] = "no routing address known for its directory-service mailbox"
            elif key is None:
                reasons[site] = "no verified key (no connector, and none replicated yet)"
            else:
                reasons[site] = ""
        return reasons

    def ask_track(self, conn: Connection, message_id: str, sites: Sequence[str]) -> str:
        """Queue a signed track-query for `message_id` ("<...>") to each of `sites`; returns
        the token their answers carry. Old queries and answers are pruned here."""
        if not message_id or len(message_id) > tracking.MAX_MESSAGE_ID:
            raise InvalidValueError("a Message-ID of 1 to 998 characters is needed")
        routes = {site: self._routing_address_of(site) for site in sites}
        missing = sorted(site for site, routing in routes.items() if not routing)
        if missing:
            raise NotFoundError(f"no routing address known for {', '.join(missing)}")
        now = self.clock.now()
        token = uuid.uuid4().hex
        tracking.prune(conn, now)
        tracking.record_query(conn, token, message_id, sorted(routes), now)
        body = {"token": token, "message_id": message_id}
        for site, routing in sorted(routes.items()):
            self._queue(conn, MessageType.TRACK_QUERY, site, dsa_address(routing), body)
        return token

    def _take_track(self, conn: Connection, message: ReplicationMessage, queue_id: str) -> Received:
        """A verified track-query or track-answer. The same message twice is a replay (by
        its (origin, seq), kept until it expires: the high-water marks stay untouched)."""
        token = message.body.get("token")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return self._reject(
                conn, "malformed", message.origin, queue_id, f"{message.type} without token"
            )
        if not tracking.mark_seen(
            conn, message.origin, message.seq, message.expires, self.clock.now()
        ):
            return self._reject(
                conn,
                "replay",
                message.origin,
                queue_id,
                f"{message.type} #{message.seq} was taken before",
            )
        if message.type is MessageType.TRACK_QUERY:
            return self._answer_track(conn, message, token, queue_id)
        return self._take_track_answer(conn, message, token, queue_id)

    def _answer_track(
        self, conn: Connection, message: ReplicationMessage, token: str, queue_id: str
    ) -> Received:
        """Answer with our events for the Message-ID, to the asker's directory-service
        address as our directory knows it (never one the query names: no reflection)."""
        message_id = message.body.get("message_id")
        if not isinstance(message_id, str) or not 0 < len(message_id) <= tracking.MAX_MESSAGE_ID:
            return self._reject(
                conn, "malformed", message.origin, queue_id, "track-query without a Message-ID"
            )
        routing = self._routing_address_of(message.origin)
        if not routing:
            return self._reject(
                conn,
                "no-connector",
                message.origin,
                queue_id,
                "track-query from a site with no address",
            )
        events, truncated = message_events(conn, message_id, limit=tracking.MAX_EVENTS)
        body = {
            "token": token,
            "message_id": message_id,
            "events": tracking.events_to_wire(events),
            "truncated": truncated,
        }
        self._queue(conn, MessageType.TRACK_ANSWER, message.origin, dsa_address(routing), body)
        return Received("track-answered", message.origin, f"token {token}: {len(events)} events")

    def _take_track_answer(
        self, conn: Connection, message: ReplicationMessage, token: str, queue_id: str
    ) -> Received:
        events = tracking.events_from_wire(message.body.get("events"), message.origin)
        if events is None:
            return self._reject(
                conn,
                "malformed",
                message.origin,
                queue_id,
                f"track-answer events not a list of at most {tracking.MAX_EVENTS} events",
            )
        stored = tracking.store_answer(
            conn,
            token,
            message.origin,
            events,
            truncated=message.body.get("truncated") is True,
            now=self.clock.now(),
        )
        if stored != "stored":
            # Not a fault of the message (it verified): an answer to a query we forgot, or
            # did not send to this site. Nothing is kept.
            log.info("track-answer from %s ignored: %s %s", message.origin, stored, token)
            return Received("ignored", message.origin, f"track-answer {stored}: token {token}")
        return Received("track-taken", message.origin, f"token {token}: {len(events)} events")

    # -- answering --------------------------------------------------------------------------

    def serve(
        self, conn: Connection, message: ReplicationMessage, connector: Connector
    ) -> Received:
        """Answer one verified request from a configured peer."""
        now = self.clock.now()
        body = message.body
        requested = _int_map(body.get("ncs"))
        exclude = {str(x) for x in body.get("exclude", []) if isinstance(x, str)}
        exclude |= {message.origin}
        for nc, usn in requested.items():
            state.bump_link(conn, message.origin, nc, applied=0, peer_watermark=usn)
        extra = sorted(self.held_ncs(conn) - set(requested) - exclude)
        cursors = {nc: usn for nc, usn in sorted(requested.items()) if nc not in exclude}
        cursors.update(dict.fromkeys(extra, 0))
        batch = self._prefetched(message.origin, cursors) or self._collect(conn, cursors)
        if batch.more:
            ends = {nc: r["to"] for nc, r in batch.ncs.items()}
            self._prefetch(message.origin, {**cursors, **ends})
        answer = {
            "in_reply_to": message.seq,
            "ncs": batch.ncs,
            "objects": batch.objects,
            "more": batch.more,
        }
        self._queue(
            conn,
            MessageType.ANSWER,
            message.origin,
            dsa_address(connector.routing_address),
            answer,
        )
        state.update_peer(conn, message.origin, last_served_at=now, bump={"requests_served": 1})
        return Received(
            "answered",
            message.origin,
            f"request #{message.seq}: {batch.size} objects, more={batch.more}",
        )

    def _prefetch(self, peer: str, cursors: dict[str, int]) -> None:
        """Note the batch `peer` will most likely ask for next (from where this answer stops),
        to be read by `start_prefetches` while the answer travels and is applied: a long pull
        is a chain of round trips, and this read is the answering side's longest step in
        each. Used only if the next request asks for exactly these cursors."""
        self._prefetches[peer] = _Prefetch(cursors, None, self.clock.now())

    def start_prefetches(self) -> None:
        """Start the reads `_prefetch` noted, in a reading thread of their own. The transport
        calls this once the answer is on its way, so the read does not hold the answer up."""
        # A snapshot: the writer's thread may note another peer's prefetch meanwhile.
        for prefetch in list(self._prefetches.values()):
            if prefetch.future is None:
                if self._prefetcher is None:
                    self._prefetcher = ThreadPoolExecutor(1, "replication-prefetch")
                prefetch.future = self._prefetcher.submit(self._collect_read, prefetch.cursors)

    def _collect_read(self, cursors: Mapping[str, int]) -> _Collected:
        with self.directory.store.read() as conn:
            return self._collect(conn, cursors)

    def _prefetched(self, peer: str, cursors: Mapping[str, int]) -> _Collected | None:
        """The prefetched batch for exactly these cursors, if one was read recently. It is a
        snapshot from when it was read: anything changed since has a higher USN than its
        range, so the answers after it carry it, as if the request had come then."""
        prefetch = self._prefetches.pop(peer, None)
        if prefetch is None or prefetch.future is None or prefetch.cursors != cursors:
            return None
        if self.clock.now() - prefetch.at > _PREFETCH_FRESH:
            prefetch.future.cancel()
            return None
        try:
            return prefetch.future.result(timeout=_PREFETCH_WAIT)  # a read of ms, unless stuck
        except Exception:  # a failed read: read again, in the transaction
            log.exception("prefetched replication batch for %s failed; reading it again", peer)
            return None

    def _collect(self, conn: Connection, cursors: Mapping[str, int]) -> _Collected:
        budget = self.batch
        objects: list[WireObject] = []
        ncs: dict[str, dict[str, int]] = {}
        more = False
        marks = state.watermarks(conn)
        for nc, start in cursors.items():
            if budget <= 0:
                more = True
                break
            high = _highest_usn(conn, nc)
            if nc != self.site:
                # A replica is served only as far as it is complete here: objects past our
                # watermark (after a gap) would make the requester skip what we still miss.
                high = min(high, marks.get(nc, 0))
            found = [o for o in objects_since(conn, nc, start, budget + 1) if o.usn_changed <= high]
            if len(found) > budget:  # this naming context goes on in the next answer
                found = found[:budget]
                more = True
                end = found[-1].usn_changed
            else:
                end = max(start, high)
            ncs[nc] = {"from": start, "to": end, "high": high}
            objects.extend(found)
            budget -= len(found)
        wire = canonical([o.as_wire() for o in objects])
        return _Collected(orjson.Fragment(wire), len(objects), ncs, more)

    # -- taking answers ---------------------------------------------------------------------

    def _has_gap(self, conn: Connection, ranges: Mapping[str, tuple[int, int, int]]) -> bool:
        own = {nc: r for nc, r in ranges.items() if nc != self.site}
        return _gap(state.watermarks(conn), own)

    def _take_answer(
        self,
        conn: Connection,
        message: ReplicationMessage,
        connector: Connector,
        sites: set[str],
        checked: Checked | None = None,
    ) -> Received:
        """Apply one verified answer; `sites`: those of our connectors (read by `receive`);
        `checked`: its objects as `wire_objects` made them, if the caller did."""
        now = self.clock.now()
        body = message.body
        ranges = _ranges(body.get("ncs"))
        raw_objects = body.get("objects")
        if ranges is None or not isinstance(raw_objects, list) or len(raw_objects) > BATCH:
            return self._reject(
                conn, "malformed", message.origin, "", f"answer without ranges or over {BATCH}"
            )
        # A peer may answer only for naming contexts we pull through it: not ours, not a
        # removed site's, and not those of our other direct peers (we pull those from their
        # owners), whatever the answer itself declares; no range may end beyond what the
        # peer says it has.
        direct = (sites - {connector.site}) | removed_sites(conn, self.site)
        ranges = {
            nc: (start, min(end, max(high, start)), high)
            for nc, (start, end, high) in ranges.items()
            if nc != self.site and nc not in direct
        }
        if checked is None or len(checked.objects) != len(raw_objects):
            checked = check_objects(raw_objects)
        valid = checked.valid
        result = apply_objects(conn, valid, local_site=self.site, allowed=ranges, checked=checked)
        result.refused += len(checked.objects) - len(valid)
        if result.applied:  # mail waiting for the directory may be routable now
            for moved in move_aside_lost_claims(conn, self.site, now):
                log.warning(
                    "address moved aside: alias=%s address=%s given=%s held_by=%s",
                    moved.alias,
                    moved.address,
                    moved.given,
                    moved.held_by,
                )
            retry_directory_deferrals(conn, now)
        marks = state.watermarks(conn)
        per_nc: dict[str, int] = {}
        for obj in valid:
            per_nc[obj.site] = per_nc.get(obj.site, 0) + 1
        for nc, (start, end, high) in ranges.items():
            if nc == self.site:
                continue
            if start <= marks.get(nc, 0) and end > marks.get(nc, 0):
                state.set_watermark(conn, nc, end)
            state.bump_link(
                conn,
                connector.site,
                nc,
                applied=per_nc.get(nc, 0),
                peer_high=high,
                last_answer_at=now,
            )
        state.update_peer(
            conn,
            connector.site,
            last_answer_at=now,
            bump={"answers_received": 1, "objects_applied": result.applied},
        )
        peer = state.get_peer(conn, connector.site)
        more = body.get("more") is True
        if peer.outstanding_seq == body.get("in_reply_to"):
            if more:
                cursors = {nc: end for nc, (_, end, _) in ranges.items()}
                self._send_request(
                    conn, connector, cursors, full=bool(peer.outstanding_full), direct=sites
                )
            elif self._has_gap(conn, ranges) and self._heals.get(connector.site, 0) < _MAX_HEALS:
                # An answer was lost or came out of order (e.g. a crash between asking ahead
                # and applying): ask again from what we really hold (a few times at most, so
                # a peer that keeps answering past our watermark cannot keep us asking).
                self._heals[connector.site] = self._heals.get(connector.site, 0) + 1
                self._send_request(conn, connector, {}, full=False, direct=sites)
            else:
                self._heals.pop(connector.site, None)
                state.update_peer(
                    conn,
                    connector.site,
                    outstanding_seq=None,
                    outstanding_at=None,
                    outstanding_full=False,
                    last_complete_at=now,
                )
        detail = (
            f"answer #{message.seq}: {result.applied} applied, {result.unchanged} unchanged, "
            f"{result.refused} refused, more={more}"
        )
        return Received("applied", message.origin, detail)


def _gap(marks: Mapping[str, int], ranges: Mapping[str, tuple[int, int, int]]) -> bool:
    return any(marks.get(nc, 0) < end for nc, (_, end, _) in ranges.items())


def _highest_usn(conn: Connection, nc: str) -> int:
    return int(conn.execute(_HIGHEST_USN, {"p_nc": nc}).scalar() or 0)


def _int_map(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {
        str(k): int(v)
        for k, v in value.items()
        if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
    }


def _ranges(value: object) -> dict[str, tuple[int, int, int]] | None:
    if not isinstance(value, dict):
        return None
    ranges: dict[str, tuple[int, int, int]] = {}
    for nc, spec in value.items():
        if not isinstance(spec, dict):
            return None
        numbers = [spec.get("from"), spec.get("to"), spec.get("high")]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
            return None
        start, end, high = (int(str(n)) for n in numbers)
        ranges[str(nc)] = (start, end, high)
    return ranges
