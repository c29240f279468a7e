"""The admin API's request and response bodies (pydantic): the OpenAPI document is made of them.

One job: say what goes over the wire. Responses are built from the values AdminService returns
(`from_attributes` reads the frozen dataclasses directly); nothing here decides anything.
Times are seconds since the epoch (UTC), as the store keeps them.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from sitemail.directory.ims_objects import DEFAULT_COST, MAX_COST
from sitemail.replication.connectors import DEFAULT_SCHEDULE

__all__ = [
    "AddressingChange",
    "AddressingCollision",
    "AddressingIn",
    "AddressingOut",
    "AddressingResultOut",
    "ConnectedSiteIn",
    "ConnectedSiteOut",
    "ConnectedSiteUpdate",
    "ConnectorIn",
    "ConnectorOut",
    "ConnectorUpdate",
    "DomainIn",
    "DomainOut",
    "DomainRouteIn",
    "DomainRouteOut",
    "ErrorOut",
    "ExplainOut",
    "FindingOut",
    "KccOut",
    "MessagePathOut",
    "PendingAcceptIn",
    "PendingOut",
    "QueueEntryOut",
    "QueueMessageOut",
    "RecipientIn",
    "RecipientKind",
    "RecipientOut",
    "RecipientUpdate",
    "ReplicationStatusOut",
    "RequestNowIn",
    "RequestOutcomeOut",
    "RetryOut",
    "RoutingTableOut",
    "SiteAnswerOut",
    "SiteKeyOut",
    "SitesOut",
    "SkippedSiteOut",
    "TrackAskIn",
    "TrackAskOut",
    "TrackEventOut",
]

# Bounds that keep nonsense out before it reaches the directory (which checks the rest).
Name = Field(min_length=1, max_length=256)
Text = Field(default="", max_length=1024)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    """Every error: a message for the person who must act on it, and a stable code."""

    error: str
    code: str
    detail: list[dict[str, object]] | None = None


# -- the organisation ----------------------------------------------------------------------------


class SiteOut(_Out):
    name: str
    display_name: str
    servers: list[str]
    routing_domain: str
    key_fingerprint: str
    is_local: bool


class SitesOut(BaseModel):
    organization: str
    site: str  # this site
    server: str  # this server
    addressing: str
    sites: list[SiteOut]


class SiteKeyOut(BaseModel):
    public_key: str
    fingerprint: str
    tls_fingerprint: str


# -- recipients ----------------------------------------------------------------------------------


class RecipientKind(StrEnum):
    MAILBOX = "mailbox"
    CONTACT = "contact"
    GROUP = "group"


class RecipientOut(BaseModel):
    guid: str
    kind: RecipientKind
    alias: str
    site: str
    display_name: str
    primary_address: str
    addresses: list[str]
    proxies: list[str]  # "SMTP:" primary, "smtp:" secondary
    given_name: str = ""
    surname: str = ""
    initials: str = ""
    target: str = ""  # contacts: where mail is forwarded
    members: list[str] = []  # groups: member aliases
    usn: int
    version: int
    read_only: bool  # a replica owned by another site


class RecipientIn(_In):
    kind: RecipientKind
    alias: str = Name
    display_name: str = Name
    given_name: str = Text
    surname: str = Text
    initials: str = Text
    target: str = Text  # contacts: the external address
    members: list[str] = Field(default=[], max_length=10_000)  # groups
    addresses: list[str] = Field(default=[], max_length=1000)  # extra (secondary) addresses
    password: str | None = Field(default=None, min_length=1, max_length=1024)  # mailboxes


class RecipientUpdate(_In):
    """Fields left out (or null) are not changed."""

    display_name: str | None = Field(default=None, min_length=1, max_length=256)
    given_name: str | None = Field(default=None, max_length=1024)
    surname: str | None = Field(default=None, max_length=1024)
    initials: str | None = Field(default=None, max_length=1024)
    target: str | None = Field(default=None, max_length=1024)
    add_addresses: list[str] = Field(default=[], max_length=1000)
    remove_addresses: list[str] = Field(default=[], max_length=1000)
    primary_address: str | None = Field(default=None, max_length=1024)
    add_members: list[str] = Field(default=[], max_length=10_000)
    remove_members: list[str] = Field(default=[], max_length=10_000)
    password: str | None = Field(default=None, min_length=1, max_length=1024)


# -- site addressing ------------------------------------------------------------------------------


class AddressingOut(BaseModel):
    site: str
    smtp: str


class AddressingIn(_In):
    smtp: str = Field(min_length=1, max_length=512, description="e.g. '@example.com'")
    update_recipients: bool = False
    drop_old: bool = False
    dry_run: bool = False


class AddressingChange(BaseModel):
    alias: str
    old: str
    new: str


class AddressingCollision(_Out):
    alias: str
    wanted: str
    given: str
    held_by: str


class AddressingResultOut(BaseModel):
    old_template: str
    new_template: str
    dry_run: bool
    recipients_updated: bool  # False: only new recipients get the new template
    updated: int
    changes: list[AddressingChange]
    collisions: list[AddressingCollision]


# -- the IMS: connected sites, domains, domain routes ------------------------------------------


class ConnectedSiteIn(_In):
    site: str = Name
    routing_address: str = Field(min_length=1, max_length=256)
    cost: int = Field(default=DEFAULT_COST, ge=1, le=MAX_COST)
    tls_fingerprint: str = Field(default="", max_length=128)


class ConnectedSiteUpdate(_In):
    """Fields left out stay; an empty tls_fingerprint removes the pin."""

    routing_address: str | None = Field(default=None, min_length=1, max_length=256)
    cost: int | None = Field(default=None, ge=1, le=MAX_COST)
    tls_fingerprint: str | None = Field(default=None, max_length=128)


class ConnectedSiteOut(_Out):
    site: str
    routing_address: str
    cost: int
    tls_fingerprint: str
    owner: str
    known: bool  # whether the directory holds a site of that name


class DomainIn(_In):
    domain: str = Field(min_length=1, max_length=256)
    internal_relay: bool = False
    forward_unresolved: str = Field(default="", max_length=256)


class DomainOut(_Out):
    domain: str
    type: str
    forward_unresolved: str
    owner: str


class DomainRouteIn(_In):
    domain: str = Field(min_length=1, max_length=256, description="'#domain': exactly it")
    host: str = Field(min_length=1, max_length=256, description="host, IP or host:port")


class DomainRouteOut(_Out):
    domain: str
    host: str
    site: str


class SitePathOut(BaseModel):
    site: str
    path: list[str]
    cost: int
    first_hop: str
    routing_address: str
    tls_pinned: bool


class RoutingTableOut(BaseModel):
    site: str
    sites: list[SitePathOut]
    unreachable_sites: list[str]
    site_domains: dict[str, str]
    ambiguous_site_domains: list[str]
    domain_routes: list[DomainRouteIn]
    internal_relay: dict[str, str]
    relayed_by_site: dict[str, str]
    accepted_domains: list[str]
    smart_host: str


class SiteHopOut(BaseModel):
    site: str
    routing_address: str
    relay: str | None
    tls_pinned: bool


class ExplainOut(BaseModel):
    address: str
    transport: str
    nexthop: str
    site: str
    rule: str
    status: str
    reason: str
    steps: list[str]
    smtp_policy: str
    site_hop: SiteHopOut | None
    sender: str


# -- replication ---------------------------------------------------------------------------------


class ConnectorIn(_In):
    site: str = Name
    bridgehead: str = Name
    routing_address: str = Field(min_length=1, max_length=256)
    peer_key: str = Field(min_length=1, max_length=512)
    schedule: str = Field(default=DEFAULT_SCHEDULE, min_length=1, max_length=32)


class ConnectorUpdate(_In):
    """Fields left out stay. The pinned key is not among them: a new key is remove, then add."""

    bridgehead: str | None = Field(default=None, min_length=1, max_length=64)
    routing_address: str | None = Field(default=None, min_length=1, max_length=256)
    schedule: str | None = Field(default=None, min_length=1, max_length=32)


class ConnectorOut(_Out):
    site: str
    bridgehead: str
    routing_address: str
    peer_key: str
    fingerprint: str
    schedule: str
    owner: str


class RequestNowIn(_In):
    refresh_all: bool = False


class RequestOutcomeOut(_Out):
    peer: str
    sent: bool
    seq: int
    detail: str


class LinkOut(_Out):
    nc: str
    watermark: int
    peer_watermark: int | None
    peer_high: int | None
    backlog: int
    objects_applied: int
    last_answer_at: float | None


class PeerOut(_Out):
    peer: str
    connector: bool
    waiting: bool
    outstanding_seq: int | None
    outstanding_at: float | None
    last_request_at: float | None
    last_answer_at: float | None
    last_complete_at: float | None
    last_served_at: float | None
    lag: float | None
    requests_sent: int
    answers_received: int
    requests_served: int
    objects_applied: int
    links: list[LinkOut]


class PendingOut(BaseModel):
    site: str
    state: str  # pending or rejected
    requests: int
    first_seen: float
    last_seen: float
    routing_address: str
    bridgehead: str
    public_key: str
    fingerprint: str
    key_verified: bool
    network: str = ""  # where the first request came from (IPv4 /24, IPv6 /64), "" unknown


class ReplicationStatusOut(BaseModel):
    site: str
    watermarks: dict[str, int]
    peers: list[PeerOut]
    pending_partners: list[PendingOut]
    rejected: dict[str, int]


class PendingAcceptIn(_In):
    schedule: str = Field(default=DEFAULT_SCHEDULE, min_length=1, max_length=32)
    fingerprint: str = Field(default="", max_length=256)


class KccWarningOut(_Out):
    code: str
    message: str
    fix: str


class KccOut(BaseModel):
    site: str
    sites: list[SiteOut]
    connectors: list[ConnectorOut]
    warnings: list[KccWarningOut]


# -- the queue and tracking ----------------------------------------------------------------------


class QueueRecipientOut(_Out):
    address: str
    state: str
    attempts: int
    next_attempt_at: float
    last_status: str
    last_text: str
    doing: str = ""  # an attempt in progress: what it is doing ("" when none)
    doing_since: float | None = None
    attempt_started: float | None = None


class QueueEntryOut(_Out):
    queue_id: str
    received_at: float
    sender: str
    size: int
    message_id: str
    held: bool
    is_dsn: bool
    recipients: list[QueueRecipientOut]


class QueueMessageOut(QueueEntryOut):
    headers: str


class RetryOut(BaseModel):
    due_now: int  # recipients made due


class TrackEventOut(_Out):
    at: float
    event: str
    queue_id: str
    message_id: str
    sender: str
    recipient: str
    site: str
    detail: str


class TrackAskIn(_In):
    ref: str = Field(
        min_length=1, max_length=998, description="Message-ID (with or without <>) or queue id."
    )


class SkippedSiteOut(_Out):
    site: str
    reason: str  # why it cannot be asked: no routing address, no verified key


class TrackAskOut(_Out):
    """A track-query queued to every other site this site can address and verify."""

    token: str  # carried by the answers; `GET /api/track/path?token=` shows this query's sites
    message_id: str  # "<...>": a queue id is resolved to its Message-ID here
    asked: list[str]
    skipped: list[SkippedSiteOut]


class SiteAnswerOut(_Out):
    site: str
    answered: bool
    answered_at: float | None
    events: int  # how many events its answer carried
    truncated: bool  # the site had more: its latest events were sent


class MessagePathOut(_Out):
    """One message's path across sites: this site's events and each answered site's, by
    time, each naming its site; the query's sites, answered or still pending."""

    message_id: str
    local_site: str
    token: str  # the query shown ("" when no site was ever asked)
    asked_at: float | None
    events: list[TrackEventOut]
    sites: list[SiteAnswerOut]
    answered: list[str]
    pending: list[str]


# -- doctor --------------------------------------------------------------------------------------


class FindingOut(_Out):
    check: str
    level: str
    message: str
    fix: str
