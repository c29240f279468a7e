"""The server's Prometheus metrics: counters from the event catalogue, gauges read at scrape.

One job: turn what the server reports into Prometheus's text format for `GET /metrics` on the
admin port. Two sources:
- counters, fed by `observe` with every catalogued event the server emits (core/events.py;
  site.py listens for its own server): messages received by origin site, recipients delivered,
  deferred and bounced by next hop and reason, DSNs, flushes, logins failed by protocol, SMTP
  connections, replication messages by partner;
- gauges, read from the store when scraped (`scrape`): the queue by next hop (recipients and
  the age of the oldest, queue/shape.py), messages queued, and each partner's replication lag.

Counters start at zero with the process, as Prometheus expects (`rate()` handles restarts).
Label values are bounded by the organisation's own names (sites, next hops, status codes), not
by what a client sends: a peer's address is never a label. Who may read /metrics: docs/metrics.md.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from sitemail.admin.service import AdminService
from sitemail.core.events import (
    AuthFailed,
    Event,
    QueueBounced,
    QueueDeferred,
    QueueDelivered,
    QueueDsn,
    QueueExpired,
    QueueFlushed,
    QueueRelayed,
    ReplicationApplied,
    ReplicationSent,
    SmtpAccepted,
    SmtpConnected,
)

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
EXTERNAL = "external"  # the origin of mail no sibling site proved it sent
REPLICATION = "replication"  # directory replication mail (its origin is checked later)


def _split(hop: str) -> tuple[str, str]:
    """ "site SiteB" -> ("site", "SiteB"); "local" -> ("local", "")."""
    transport, _, nexthop = hop.partition(" ")
    return transport or "none", nexthop


class Metrics:
    """One server's counters (fed by `observe`) and its scrape (`scrape`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "sitemail_messages_received",
            "Messages accepted over SMTP (250), by origin: a sibling site, external, or "
            "replication (directory mail).",
            ["origin"],
            registry=r,
        )
        self.received_rcpts = Counter(
            "sitemail_recipients_received",
            "Recipients of the messages accepted, by origin.",
            ["origin"],
            registry=r,
        )
        self.delivered = Counter(
            "sitemail_recipients_delivered",
            "Recipients delivered: into a mailbox here (transport local) or to a next hop.",
            ["transport", "nexthop"],
            registry=r,
        )
        self.deferred = Counter(
            "sitemail_recipients_deferred",
            "Delivery attempts that failed for now (retried later), by next hop.",
            ["transport", "nexthop"],
            registry=r,
        )
        self.bounced = Counter(
            "sitemail_recipients_bounced",
            "Recipients failed for good, by enhanced status code (4.4.7: expired in the queue).",
            ["reason", "transport"],
            registry=r,
        )
        self.dsns = Counter(
            "sitemail_dsn_queued",
            "Delivery status notifications queued, by kind.",
            ["kind"],
            registry=r,
        )
        self.flushed = Counter(
            "sitemail_queue_flushed_recipients",
            "Deferred recipients made due at once because their next hop took a message.",
            ["transport", "nexthop"],
            registry=r,
        )
        self.login_failures = Counter(
            "sitemail_login_failures", "Failed logins, by protocol.", ["protocol"], registry=r
        )
        self.connections = Counter(
            "sitemail_smtp_connections",
            "SMTP connections, by listening port.",
            ["port"],
            registry=r,
        )
        self.replication = Counter(
            "sitemail_replication_messages",
            "Replication messages sent to (queued) or applied from each partner site.",
            ["partner", "direction", "kind"],
            registry=r,
        )
        self._lock = threading.Lock()  # scrapes run in the API's threads

    def observe(self, event: Event) -> None:  # noqa: PLR0912 -- one branch per event kind
        """Count one catalogued event (a listener of core.events)."""
        match event:
            case SmtpAccepted():
                origin = REPLICATION if event.replication else (event.origin or EXTERNAL)
                self.received.labels(origin).inc()
                self.received_rcpts.labels(origin).inc(event.recipients)
            case QueueDelivered():
                self.delivered.labels("local", "").inc()
            case QueueRelayed():
                self.delivered.labels(*_split(event.nexthop)).inc()
            case QueueDeferred():
                self.deferred.labels(*_split(event.nexthop)).inc()
            case QueueBounced():
                self.bounced.labels(event.status or "5.0.0", _split(event.nexthop)[0]).inc()
            case QueueExpired():
                self.bounced.labels("4.4.7", _split(event.nexthop)[0]).inc()
            case QueueDsn():
                self.dsns.labels(event.kind).inc()
            case QueueFlushed():
                self.flushed.labels(*_split(event.nexthop)).inc(event.recipients)
            case AuthFailed():
                self.login_failures.labels(event.protocol).inc()
            case SmtpConnected():
                self.connections.labels(str(event.port)).inc()
            case ReplicationSent():
                self.replication.labels(event.peer, "sent", event.kind).inc()
            case ReplicationApplied():
                self.replication.labels(event.peer, "applied", event.kind).inc()
            case _:
                pass

    def scrape(self, service: AdminService) -> bytes:
        """The text exposition: the counters, then gauges read now from `service`'s store."""
        gauges = CollectorRegistry()
        queued = Gauge(
            "sitemail_queue_recipients",
            "Recipients in the queue, by the next hop they wait for (queue shape).",
            ["nexthop"],
            registry=gauges,
        )
        oldest = Gauge(
            "sitemail_queue_oldest_age_seconds",
            "Age of the oldest message in the queue, by next hop.",
            ["nexthop"],
            registry=gauges,
        )
        messages = Gauge("sitemail_queue_messages", "Messages in the queue.", registry=gauges)
        lag = Gauge(
            "sitemail_replication_lag_seconds",
            "Seconds since the last complete replication exchange with each partner site.",
            ["partner"],
            registry=gauges,
        )
        shape = service.queue.shape()
        messages.set(shape.messages)
        for row in shape.hops:
            queued.labels(row.nexthop).set(row.total)
            oldest.labels(row.nexthop).set(row.oldest)
        for peer in service.replication.status().peers:
            if peer.lag is not None:
                lag.labels(peer.peer).set(peer.lag)
        with self._lock:
            counters = generate_latest(self.registry)
        return counters + generate_latest(gauges)
