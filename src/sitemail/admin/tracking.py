"""Message tracking across sites: ask the other sites, and the path of one message.

One job: the AdminService operations behind `sitemail track --all-sites`, `POST
/api/track/ask` and `GET /api/track/path` (and the console's timeline). `ask_sites` queues a
signed track-query for the message's Message-ID to every other site this site can address and
verify; the running server sends them and takes the answers (replication/tracking.py).
`path` merges this site's tracking log with every answered site's events into one timeline.
Both run in their own transaction on the data dir, whether or not the server runs.

Interface (stable, for the CLI, the API and the console):
- `TrackingAdmin.resolve(ref) -> str`: the Message-ID ("<...>") of a queue id or Message-ID.
- `TrackingAdmin.ask_sites(ref) -> TrackAsked`: token, Message-ID, sites asked and skipped.
- `TrackingAdmin.path(ref) -> MessagePath`: the merged timeline and which sites answered.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select

from sitemail.config import ServerConfig
from sitemail.core.clock import Clock
from sitemail.core.errors import InvalidValueError, NotFoundError
from sitemail.directory import Directory
from sitemail.queue.admin import message_events
from sitemail.queue.records import TrackEvent
from sitemail.replication import tracking
from sitemail.replication.keys import load_site_key
from sitemail.replication.replicator import Replicator
from sitemail.replication.tracking import SiteAnswer
from sitemail.store.tables import queue_message, track_event

__all__ = ["MessagePath", "SiteAnswer", "SkippedSite", "TrackAsked", "TrackingAdmin"]


@dataclass(frozen=True, slots=True)
class SkippedSite:
    """A known site that was not asked, and why."""

    site: str
    reason: str


@dataclass(frozen=True, slots=True)
class TrackAsked:
    """What `ask_sites` did: the query's token, the Message-ID asked for, the sites asked."""

    token: str
    message_id: str
    asked: tuple[str, ...]
    skipped: tuple[SkippedSite, ...]


@dataclass(frozen=True, slots=True)
class MessagePath:
    """One message's path across sites as far as this site knows it.

    `events`: this site's tracking events and every answered site's (each site's latest
    answer), sorted by time; each names its site. `sites`: the sites of the latest query
    (`token`, asked at `asked_at`; "" and None when never asked) with their answer state."""

    message_id: str
    local_site: str
    token: str
    asked_at: float | None
    events: tuple[TrackEvent, ...]
    sites: tuple[SiteAnswer, ...]

    @property
    def answered(self) -> tuple[str, ...]:
        return tuple(s.site for s in self.sites if s.answered)

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(s.site for s in self.sites if not s.answered)


class TrackingAdmin:
    def __init__(self, config: ServerConfig, directory: Directory, clock: Clock) -> None:
        self.config = config
        self.directory = directory
        self.clock = clock

    def _replicator(self) -> Replicator:
        return Replicator(
            self.directory, self.clock, load_site_key(self.config.data_dir), self.config.replication
        )

    def resolve(self, ref: str) -> str:
        """The Message-ID ("<...>") of a queue id or Message-ID known here; a Message-ID (with
        an @) unknown here is taken as it is: the message may never have passed this site."""
        ref = ref.strip()
        if not ref:
            raise InvalidValueError("give a queue id or a Message-ID")
        if len(ref) > tracking.MAX_MESSAGE_ID:
            raise InvalidValueError(
                f"a Message-ID has at most {tracking.MAX_MESSAGE_ID} characters"
            )
        found = self._message_id_of_queue_id(ref.upper())
        if found is not None:
            if not found:
                raise InvalidValueError(
                    f"message {ref.upper()} has no Message-ID: it can be followed at this site "
                    "only (sitemail track without --all-sites)"
                )
            return tracking.normalize_message_id(found)
        if "@" in ref or self._known_message_id(ref):
            return tracking.normalize_message_id(ref)
        raise NotFoundError(
            f"no message with queue id {ref!r} here; a Message-ID (with its @) is asked "
            "for as it is"
        )

    def _message_id_of_queue_id(self, queue_id: str) -> str | None:
        """The Message-ID of a queue id seen here ("" when it had none), None if unknown."""
        with self.directory.store.read() as conn:
            logged = conn.execute(
                select(track_event.c.message_id)
                .where(track_event.c.queue_id == queue_id)
                .order_by(track_event.c.message_id.desc())  # a non-empty one first
                .limit(1)
            ).scalar()
            if logged is not None:
                return str(logged)
            queued = conn.execute(
                select(queue_message.c.message_id).where(queue_message.c.queue_id == queue_id)
            ).scalar()
        return None if queued is None else str(queued)

    def _known_message_id(self, ref: str) -> bool:
        bare = ref.strip("<>")
        with self.directory.store.read() as conn:
            return (
                conn.execute(
                    select(track_event.c.id)
                    .where(
                        or_(
                            track_event.c.message_id == f"<{bare}>",
                            track_event.c.message_id == bare,
                        )
                    )
                    .limit(1)
                ).first()
                is not None
            )

    def ask_sites(self, ref: str) -> TrackAsked:
        """Queue a signed track-query for the message `ref` (queue id or Message-ID) to every
        other site this site can address and verify (known sites with a routing address and
        a pinned or replicated key); the others are listed as skipped with the reason. The
        running server sends the queries (wake it) and takes the answers; read them with
        `path`. Only verified sites of the organisation are asked, and answer."""
        message_id = self.resolve(ref)
        replicator = self._replicator()
        reasons = replicator.trackable_sites()
        asked = tuple(site for site, reason in reasons.items() if not reason)
        skipped = tuple(SkippedSite(site, reason) for site, reason in reasons.items() if reason)
        with self.directory.store.write() as conn:
            token = replicator.ask_track(conn, message_id, asked)
        return TrackAsked(token, message_id, asked, skipped)

    def path(self, ref: str, token: str = "") -> MessagePath:
        """The merged timeline of the message `ref` (queue id or Message-ID): this site's
        events and each answered site's, by time; the answered and pending sites of query
        `token` (default: the latest query for the message). NotFoundError when nothing is
        known of the message here and no site was asked, or for a token of another one."""
        message_id = self.resolve(ref)
        with self.directory.store.read() as conn:
            local, _ = message_events(conn, message_id)
            remote = tracking.remote_events(conn, message_id)
            if token:
                query = tracking.get_query(conn, token)
                if query is None or query.message_id != message_id:
                    raise NotFoundError(f"no tracking query {token!r} for {message_id} here")
            else:
                query = tracking.latest_query(conn, message_id)
        if not local and query is None:
            raise NotFoundError(
                f"no tracking events for {message_id} here, and no site was asked "
                "(sitemail track --all-sites)"
            )
        events = sorted([*local, *remote], key=lambda e: (e.at, e.site))
        return MessagePath(
            message_id=message_id,
            local_site=self.directory.local_site,
            token=query.token if query else "",
            asked_at=query.asked_at if query else None,
            events=tuple(events),
            sites=query.sites if query else (),
        )
