"""Replication administration: connectors, Request Now, status, pending partners, KCC.

One job: the replication operations of AdminService, returning values for the front ends.
Each runs in its own transaction on the data dir, whether or not the server runs; what it
queues is sent by the server (the CLI pokes it so it does not wait for its next poll).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from sitemail.config import ServerConfig
from sitemail.core.clock import Clock
from sitemail.core.errors import ConflictError, NotFoundError
from sitemail.directory import Directory, ObjectKind, Recipient
from sitemail.directory.objects import row_to_recipient
from sitemail.queue.admin import QueueAdmin, QueueEntry
from sitemail.replication import state
from sitemail.replication.connectors import (
    DEFAULT_SCHEDULE,
    Connector,
    add_connector,
    connector_for,
    list_connectors,
    remove_connector,
    update_connector,
)
from sitemail.replication.forget import readmit
from sitemail.replication.kcc import KccReport, run_kcc
from sitemail.replication.keys import fingerprint as key_fingerprint
from sitemail.replication.keys import load_site_key
from sitemail.replication.replicator import Replicator, RequestOutcome, dsa_address
from sitemail.store.tables import dir_object, repl_link, repl_peer, track_event

__all__ = ["LinkStatus", "PeerStatus", "ReplicationAdmin"]


@dataclass(frozen=True, slots=True)
class LinkStatus:
    nc: str
    watermark: int  # what we hold of nc
    peer_watermark: int | None  # what the peer holds of nc (from its last request)
    peer_high: int | None  # the highest USN of nc the peer has
    backlog: int  # peer_high - watermark, when known
    objects_applied: int
    last_answer_at: float | None


@dataclass(frozen=True, slots=True)
class PeerStatus:
    peer: str
    connector: bool
    waiting: bool  # a request is unanswered
    outstanding_seq: int | None
    outstanding_at: float | None
    last_request_at: float | None
    last_answer_at: float | None
    last_complete_at: float | None
    last_served_at: float | None
    lag: float | None  # seconds since the last complete exchange
    requests_sent: int
    answers_received: int
    requests_served: int
    objects_applied: int
    links: tuple[LinkStatus, ...]


@dataclass(frozen=True, slots=True)
class ReplicationStatus:
    site: str
    peers: list[PeerStatus]
    pending: list[state.Pending]
    rejected: dict[str, int]
    watermarks: dict[str, int]


class ReplicationAdmin:
    def __init__(self, config: ServerConfig, directory: Directory, clock: Clock) -> None:
        self.config = config
        self.directory = directory
        self.clock = clock

    def replicator(self) -> Replicator:
        return Replicator(
            self.directory, self.clock, load_site_key(self.config.data_dir), self.config.replication
        )

    # -- connectors -------------------------------------------------------------------------

    def add_connector(
        self,
        site: str,
        *,
        bridgehead: str,
        routing_address: str,
        peer_key: str,
        schedule: str = DEFAULT_SCHEDULE,
    ) -> Connector:
        connector = add_connector(
            self.directory,
            site,
            bridgehead=bridgehead,
            routing_address=routing_address,
            peer_key=peer_key,
            schedule=schedule,
        )
        readmit(self.directory, site)  # a removed site's name set up again
        with self.directory.store.read() as conn:
            held = state.get_pending(conn, site)
        # The request it sent before we had a connector (the article's one-sided order) is
        # answered now, when signed with the key just pinned: the requester does not ask
        # again while that one is outstanding.
        answer = (
            held is not None and held.state == "pending" and held.public_key == connector.peer_key
        )
        self._drop_pending(site, held if answer else None)
        return connector

    def list_connectors(self) -> list[Connector]:
        return list_connectors(self.directory)

    def update_connector(
        self,
        site: str,
        *,
        bridgehead: str | None = None,
        routing_address: str | None = None,
        schedule: str | None = None,
    ) -> Connector:
        return update_connector(
            self.directory,
            site,
            bridgehead=bridgehead,
            routing_address=routing_address,
            schedule=schedule,
        )

    def _queue(self) -> QueueAdmin:
        return QueueAdmin(self.directory.store, self.clock, self.directory.local_site)

    def _queued_requests(self, connector: Connector) -> list[QueueEntry]:
        """Our replication messages to this peer still in the local queue."""
        address = dsa_address(connector.routing_address).lower()
        return [
            e
            for e in self._queue().entries()
            if e.sender == "" and any(r.address.lower() == address for r in e.recipients)
        ]

    def remove_connector(self, site: str) -> Connector:
        """Remove the connector, forget any unanswered request to SITE and drop our queued
        replication messages to it (its replicas stay until their tombstones come)."""
        connector = connector_for(self.directory, site)
        removed = remove_connector(self.directory, site)
        with self.directory.store.write() as conn:
            state.update_peer(
                conn, site, outstanding_seq=None, outstanding_at=None, outstanding_full=False
            )
        if connector is not None:
            for entry in self._queued_requests(connector):
                self._queue().delete(entry.queue_id)
        return removed

    # -- request now ------------------------------------------------------------------------

    def request_now(self, site: str, *, refresh_all: bool = False) -> RequestOutcome:
        connector = connector_for(self.directory, site)
        if connector is None:
            raise NotFoundError(
                f"no replication connector to {site} (sitemail replication connector list)"
            )
        replicator = self.replicator()
        with self.directory.store.write() as conn:
            outcome = replicator.request(conn, connector, full=refresh_all)
        if outcome.sent:
            return outcome
        # Still waiting: if our request has not even left (deferred in our own queue), say
        # why and make it due now instead of leaving it to its retry schedule.
        pending = self._queued_requests(connector)
        for entry in pending:
            self._queue().retry(entry.queue_id)
        if pending:
            last = next((r.last_text for r in pending[0].recipients if r.last_text), "")
            detail = f"{outcome.detail}; it is still in this server's queue"
            detail += f" (last try: {last}), retried now" if last else ", retried now"
            return RequestOutcome(outcome.peer, False, outcome.seq, detail)
        return outcome

    # -- pending partners -------------------------------------------------------------------

    def pending(self) -> list[state.Pending]:
        with self.directory.store.read() as conn:
            return state.list_pending(conn)

    def accept_pending(
        self, site: str, *, schedule: str = DEFAULT_SCHEDULE, fingerprint: str = ""
    ) -> Connector:
        """Make a connector from a held request and answer that request. With `fingerprint`
        (as the other site's admin read it out), the held key must have exactly that one."""
        with self.directory.store.read() as conn:
            held = state.get_pending(conn, site)
        if held is None:
            raise NotFoundError(f"no pending partner {site} (sitemail replication pending list)")
        if fingerprint and key_fingerprint(held.public_key) != fingerprint.strip():
            raise ConflictError(
                f"{site}'s held key is {key_fingerprint(held.public_key)}, not {fingerprint}: "
                "do not accept it"
            )
        if connector_for(self.directory, site) is not None:
            raise ConflictError(f"a replication connector to {site} exists already")
        connector = add_connector(
            self.directory,
            site,
            bridgehead=held.bridgehead or site,
            routing_address=held.routing_address,
            peer_key=held.public_key,
            schedule=schedule,
        )
        self._drop_pending(site, held)
        return connector

    def _drop_pending(self, site: str, answer: state.Pending | None) -> None:
        """Forget `site` as a pending partner; act on its held request when given (verified
        against the connector now pinned, like any request)."""
        replicator = self.replicator()
        with self.directory.store.write() as conn:
            state.drop_pending(conn, site)
            if answer is not None:
                replicator.receive(conn, answer.request, queue_id="pending")

    def reject_pending(self, site: str) -> state.Pending:
        with self.directory.store.write() as conn:
            held = state.get_pending(conn, site)
            if held is None:
                raise NotFoundError(f"no pending partner {site}")
            state.set_pending_state(conn, site, "rejected")
        return held

    # -- round trips (sitemail doctor) -------------------------------------------------------

    def ping(self, site: str) -> str:
        """Queue a signed ping to `site`; its token, to look for the pong with `pong_at`."""
        replicator = self.replicator()
        with self.directory.store.write() as conn:
            return replicator.ping(conn, site)

    def pong_at(self, token: str) -> float | None:
        """When the pong answering ping `token` was delivered here, if it was."""
        with self.directory.store.read() as conn:
            return conn.execute(
                select(track_event.c.at).where(
                    track_event.c.event == "delivered",
                    track_event.c.detail == f"replication pong: token {token}",
                )
            ).scalar()

    # -- status -----------------------------------------------------------------------------

    def status(self) -> ReplicationStatus:
        now = self.clock.now()
        connectors = {c.site for c in list_connectors(self.directory)}
        with self.directory.store.read() as conn:
            marks = state.watermarks(conn)
            peers = conn.execute(select(repl_peer).order_by(repl_peer.c.peer)).all()
            links = conn.execute(select(repl_link).order_by(repl_link.c.peer, repl_link.c.nc)).all()
            pending = state.list_pending(conn)
            rejected = state.rejection_counts(conn)
        by_peer: dict[str, list[LinkStatus]] = {}
        for link in links:
            held = marks.get(link.nc, 0)
            by_peer.setdefault(link.peer, []).append(
                LinkStatus(
                    link.nc,
                    held,
                    link.peer_watermark,
                    link.peer_high,
                    max(0, int(link.peer_high) - held) if link.peer_high is not None else 0,
                    link.objects_applied,
                    link.last_answer_at,
                )
            )
        result = []
        names = sorted(connectors | {p.peer for p in peers if p.requests_served})
        rows = {p.peer: p for p in peers}
        for name in names:
            row = rows.get(name)
            complete = row.last_complete_at if row is not None else None
            result.append(
                PeerStatus(
                    peer=name,
                    connector=name in connectors,
                    waiting=row is not None and row.outstanding_seq is not None,
                    outstanding_seq=row.outstanding_seq if row is not None else None,
                    outstanding_at=row.outstanding_at if row is not None else None,
                    last_request_at=row.last_request_at if row is not None else None,
                    last_answer_at=row.last_answer_at if row is not None else None,
                    last_complete_at=complete,
                    last_served_at=row.last_served_at if row is not None else None,
                    lag=(now - complete) if complete is not None else None,
                    requests_sent=row.requests_sent if row is not None else 0,
                    answers_received=row.answers_received if row is not None else 0,
                    requests_served=row.requests_served if row is not None else 0,
                    objects_applied=row.objects_applied if row is not None else 0,
                    links=tuple(by_peer.get(name, [])),
                )
            )
        return ReplicationStatus(self.directory.local_site, result, pending, rejected, marks)

    # -- directory and KCC ------------------------------------------------------------------

    def objects(self, site: str | None = None) -> list[Recipient]:
        """Every live object held here (own and replicated), by site, kind and name."""
        query = select(dir_object).where(dir_object.c.is_deleted.is_(False))
        if site is not None:
            known = {s.site for s in self.directory.list_objects(ObjectKind.SITE)}
            if site not in known:
                raise NotFoundError(f"no site {site!r} in the directory held here")
            query = query.where(dir_object.c.site == site)
        with self.directory.store.read() as conn:
            rows = conn.execute(
                query.order_by(dir_object.c.site, dir_object.c.kind, dir_object.c.name)
            ).all()
        return [row_to_recipient(r) for r in rows]

    def kcc(self) -> KccReport:
        config = self.config
        hosts = [*config.listen, f"{config.server.lower()}.{self.directory.routing_domain()}"]
        return run_kcc(self.directory, local_hosts=hosts)
