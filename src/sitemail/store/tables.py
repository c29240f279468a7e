"""The database schema as SQLAlchemy Core tables (the only place tables are declared).

Directory objects of every kind live in one table, `dir_object`: the object is the unit of
replication (a JSON document of attributes with the owning site, a per-site USN and a version),
so replication moves rows without knowing kinds. `proxy_address` is a local index derived from
the objects' proxy lists: it answers "who owns this address?" in one primary-key probe and makes
addresses unique across the organisation. Secrets (`mailbox_secret`) sit in their own table
because they never replicate.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    true,
)

__all__ = [
    "dir_object",
    "mail_folder",
    "mail_message",
    "mail_uidvalidity",
    "mailbox_secret",
    "metadata",
    "organization",
    "proxy_address",
    "proxy_conflict",
    "queue_claim",
    "queue_message",
    "queue_rcpt",
    "relay_seen",
    "repl_link",
    "repl_peer",
    "repl_pending",
    "repl_rejection",
    "repl_sequence",
    "repl_watermark",
    "site_usn",
    "track_event",
    "track_query",
    "track_query_site",
    "track_remote_event",
    "track_seen",
]

# Named constraints so Alembic can alter them on SQLite (batch mode) and PostgreSQL alike.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite's INTEGER is 64-bit already; BigInteger there would lose AUTOINCREMENT semantics.
BigInt = BigInteger().with_variant(Integer(), "sqlite")

organization = Table(
    "organization",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False),
    Column("guid", String(36), nullable=False),
    Column("local_site", String(64), nullable=False),
    Column("local_server", String(64), nullable=False),
)

site_usn = Table(
    "site_usn",
    metadata,
    Column("site", String(64), primary_key=True),
    Column("usn", BigInt, nullable=False),
)

dir_object = Table(
    "dir_object",
    metadata,
    Column("guid", String(36), primary_key=True),
    Column("site", String(64), nullable=False),  # owning naming context
    Column("kind", String(32), nullable=False),
    Column("name", String(256), nullable=False),  # alias / directory name, unique per site+kind
    Column("display_name", String(256), nullable=False, default=""),
    Column("attrs", JSON, nullable=False),
    Column("usn_created", BigInt, nullable=False),
    Column("usn_changed", BigInt, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("is_deleted", Boolean, nullable=False, default=False),
    Column("changed_at", Float, nullable=False),
    Index("ix_dir_object_site_usn", "site", "usn_changed"),
    Index("ix_dir_object_site_kind_name", "site", "kind", "name"),
    Index("ix_dir_object_kind", "kind"),
)

proxy_address = Table(
    "proxy_address",
    metadata,
    Column("address_key", String(320), primary_key=True),  # lower-case, organisation-unique
    Column("address", String(320), nullable=False),  # as generated, case kept
    Column("domain", String(255), nullable=False),
    Column(
        "guid",
        String(36),
        ForeignKey("dir_object.guid", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("type", String(16), nullable=False, default="SMTP"),
    Column("is_primary", Boolean, nullable=False),
    Index("ix_proxy_address_guid", "guid"),
    Index("ix_proxy_address_domain", "domain"),
)

mailbox_secret = Table(
    "mailbox_secret",
    metadata,
    Column(
        "guid",
        String(36),
        ForeignKey("dir_object.guid", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("password_hash", Text, nullable=False),
)


# -- the queue ------------------------------------------------------------------------------
# A message is acknowledged only after its row and its recipients' rows are committed
# (synchronous=FULL: fsynced). Delivery to a local mailbox and the recipient's state change
# commit in one transaction, so a crash can neither lose nor duplicate a delivery.

queue_message = Table(
    "queue_message",
    metadata,
    Column("queue_id", String(32), primary_key=True),
    Column("received_at", Float, nullable=False),
    Column("sender", String(320), nullable=False),  # "" is the null sender
    Column("envelope", JSON, nullable=False),  # RET, ENVID, BODY, SMTPUTF8, client, helo, auth
    Column("message_id", String(998), nullable=False, default=""),
    Column("size", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("is_dsn", Boolean, nullable=False, default=False),
    Column("held", Boolean, nullable=False, default=False),
    Column("done", Boolean, nullable=False, default=False),  # every recipient is final
    Index("ix_queue_message_message_id", "message_id"),
    Index("ix_queue_message_done", "done"),
)

queue_rcpt = Table(
    "queue_rcpt",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "queue_id",
        String(32),
        ForeignKey("queue_message.queue_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("address", String(320), nullable=False),
    Column("notify", String(32), nullable=False, default=""),  # "SUCCESS,FAILURE" or ""
    Column("orcpt", String(500), nullable=False, default=""),
    Column("state", String(16), nullable=False),  # queued / delivered / failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("first_attempt_at", Float, nullable=True),
    Column("last_status", String(16), nullable=False, default=""),
    Column("last_text", Text, nullable=False, default=""),
    Column("delay_notified", Boolean, nullable=False, default=False),
    # "transport nexthop" of the last deferral (queue shape; a delivery there flushes it)
    Column("nexthop", String(300), nullable=True),
    Index("ix_queue_rcpt_due", "state", "next_attempt_at"),
    Index("ix_queue_rcpt_queue_id", "queue_id"),
)

# Which server of the site delivers a message, until when (queue.claims): several servers on
# one database share the queue; a claim whose lease ran out (its server died) is taken over.
queue_claim = Table(
    "queue_claim",
    metadata,
    Column(
        "queue_id",
        String(32),
        ForeignKey("queue_message.queue_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("server", String(64), nullable=False),
    Column("until", Float, nullable=False),
    Index("ix_queue_claim_until", "until"),
)

relay_seen = Table(
    # Each recipient of a message accepted from a sibling site whose origin (its site and queue
    # id there) was proven by the hop's signature, with the queue id we gave it: the same
    # origin and recipient again is a resend (queue.dedupe). Kept past any sender's retries.
    "relay_seen",
    metadata,
    Column("site", String(64), primary_key=True),
    Column("origin_id", String(32), primary_key=True),
    Column("recipient", String(320), primary_key=True),  # lower-cased
    Column("queue_id", String(32), nullable=False),
    Column("at", Float, nullable=False),
    Index("ix_relay_seen_at", "at"),
)

# -- mailboxes --------------------------------------------------------------------------------

mail_folder = Table(
    "mail_folder",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("mailbox", String(36), nullable=False),  # the mailbox recipient's guid
    Column("name", String(255), nullable=False),
    Column("uidvalidity", Integer, nullable=False),
    Column("uidnext", Integer, nullable=False, default=1),
    Column("special_use", String(32), nullable=False, default=""),
    Column("subscribed", Boolean, nullable=False, default=True, server_default=true()),
    # CONDSTORE (RFC 7162): raised by one on every change to the folder (append, flags,
    # expunge); a changed message takes the new value as its `modseq`.
    Column("highestmodseq", BigInteger, nullable=False, default=1, server_default="1"),
    Index("ux_mail_folder_mailbox_name", "mailbox", "name", unique=True),
)

# The highest UIDVALIDITY each mailbox has ever given a folder: folders are deleted, this is
# not, so a folder created again never gets a value (or a MAILBOXID) a client has cached.
mail_uidvalidity = Table(
    "mail_uidvalidity",
    metadata,
    Column("mailbox", String(36), primary_key=True),  # the mailbox recipient's guid
    Column("last", Integer, nullable=False),
)

mail_message = Table(
    "mail_message",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "folder_id",
        Integer,
        ForeignKey("mail_folder.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("uid", Integer, nullable=False),
    Column("internal_date", Float, nullable=False),
    Column("size", Integer, nullable=False),
    Column("flags", String(1000), nullable=False, default=""),
    Column("message_id", String(998), nullable=False, default=""),
    Column("queue_id", String(32), nullable=False, default=""),  # for tracking and audits
    Column("content", LargeBinary, nullable=False),
    Column("modseq", BigInteger, nullable=False, default=1, server_default="1"),
    Index("ux_mail_message_folder_uid", "folder_id", "uid", unique=True),
)

# -- message tracking -------------------------------------------------------------------------

track_event = Table(
    "track_event",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("event", String(16), nullable=False),  # received queued delivered deferred ...
    Column("queue_id", String(32), nullable=False),
    Column("message_id", String(998), nullable=False, default=""),
    Column("sender", String(320), nullable=False, default=""),
    Column("recipient", String(320), nullable=False, default=""),
    Column("site", String(64), nullable=False, default=""),
    Column("detail", Text, nullable=False, default=""),
    Index("ix_track_event_queue_id", "queue_id"),
    Index("ix_track_event_message_id", "message_id"),
)

# -- tracking across sites (docs/tracking.md) ------------------------------------------------
# A query this site sent to other sites for one Message-ID, what each site answered, and the
# sequence numbers of tracking messages taken (replays are refused without touching the
# replication high-water marks). Local to this server; none of it replicates.

track_query = Table(
    "track_query",
    metadata,
    Column("token", String(32), primary_key=True),  # 32 hex digits, carried by query and answer
    Column("message_id", String(998), nullable=False),  # "<...>", as the query carried it
    Column("asked_at", Float, nullable=False),
    Index("ix_track_query_message_id", "message_id"),
    Index("ix_track_query_asked_at", "asked_at"),
)

track_query_site = Table(
    # One row per site asked: answered_at stays NULL until its answer is taken.
    "track_query_site",
    metadata,
    Column(
        "token",
        String(32),
        ForeignKey("track_query.token", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("site", String(64), primary_key=True),
    Column("answered_at", Float, nullable=True),
    Column("events", Integer, nullable=False, default=0),
    Column("truncated", Boolean, nullable=False, default=False),  # the site had more events
)

track_remote_event = Table(
    # Another site's tracking events for the queried Message-ID, as its answer carried them;
    # `site` is the answer's verified origin, never a value the answer states.
    "track_remote_event",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "token",
        String(32),
        ForeignKey("track_query.token", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("site", String(64), nullable=False),
    Column("at", Float, nullable=False),
    Column("event", String(16), nullable=False),
    Column("queue_id", String(32), nullable=False),
    Column("message_id", String(998), nullable=False, default=""),
    Column("sender", String(320), nullable=False, default=""),
    Column("recipient", String(320), nullable=False, default=""),
    Column("detail", Text, nullable=False, default=""),
    Index("ix_track_remote_event_token_site", "token", "site"),
)

track_seen = Table(
    # (origin, seq) of every tracking message taken, kept until the message would expire
    # anyway: the same message again is a replay.
    "track_seen",
    metadata,
    Column("origin", String(64), primary_key=True),
    Column("seq", BigInt, primary_key=True),
    Column("expires", Float, nullable=False),
    Index("ix_track_seen_expires", "expires"),
)


# -- replication state (local to this server; none of it replicates) -------------------------

proxy_conflict = Table(
    # Claims on an address that lost to another object (duplicate proxy addresses across
    # sites, seen only through replication). The index holds the claimant with the lowest
    # guid, so every site picks the same owner whatever order replicas arrived in; a loser is
    # promoted when the winner lets the address go. The KCC reports every row as a warning.
    "proxy_conflict",
    metadata,
    Column("address_key", String(320), primary_key=True),
    Column(
        "guid",
        String(36),
        ForeignKey("dir_object.guid", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("address", String(320), nullable=False),
    Column("domain", String(255), nullable=False),
    Column("type", String(16), nullable=False, default="SMTP"),
    Column("is_primary", Boolean, nullable=False),
    Index("ix_proxy_conflict_guid", "guid"),
)

repl_sequence = Table(
    # The sequence number of the next replication message this site signs (one row).
    "repl_sequence",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInt, nullable=False),
)

repl_watermark = Table(
    # The up-to-dateness vector: for each naming context, every change up to `usn` is here.
    "repl_watermark",
    metadata,
    Column("nc", String(64), primary_key=True),
    Column("usn", BigInt, nullable=False),
)

repl_peer = Table(
    # One row per site we exchanged replication messages with.
    "repl_peer",
    metadata,
    Column("peer", String(64), primary_key=True),
    Column("hw_request", BigInt, nullable=False, default=0),  # highest request seq accepted
    Column("hw_answer", BigInt, nullable=False, default=0),  # highest answer seq accepted
    Column("outstanding_seq", BigInt, nullable=True),  # our unanswered request, if any
    Column("outstanding_at", Float, nullable=True),
    Column("outstanding_full", Boolean, nullable=False, default=False),
    Column("last_request_at", Float, nullable=True),  # we asked
    Column("last_answer_at", Float, nullable=True),  # they answered
    Column("last_complete_at", Float, nullable=True),  # an answer without "more"
    Column("last_served_at", Float, nullable=True),  # they asked, we answered
    Column("requests_sent", Integer, nullable=False, default=0),
    Column("answers_received", Integer, nullable=False, default=0),
    Column("requests_served", Integer, nullable=False, default=0),
    Column("objects_applied", Integer, nullable=False, default=0),
)

repl_link = Table(
    # Per peer and naming context: what they hold of it (from their requests) and what they
    # have of it (from their answers), for `replication status` and tombstone collection.
    "repl_link",
    metadata,
    Column("peer", String(64), primary_key=True),
    Column("nc", String(64), primary_key=True),
    Column("peer_watermark", BigInt, nullable=True),  # their USN for nc, as they asked
    Column("peer_high", BigInt, nullable=True),  # the highest USN of nc they hold
    Column("last_answer_at", Float, nullable=True),
    Column("objects_applied", Integer, nullable=False, default=0),
)

repl_pending = Table(
    # Requests from sites that have no connector here (the article's one-sided configuration):
    # held for the admin, neither answered nor bounced.
    "repl_pending",
    metadata,
    Column("origin", String(64), primary_key=True),
    Column("state", String(16), nullable=False),  # pending / rejected
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("requests", Integer, nullable=False, default=1),
    Column("public_key", String(100), nullable=False),
    Column("routing_address", String(255), nullable=False),
    Column("bridgehead", String(64), nullable=False, default=""),
    Column("verified", Boolean, nullable=False, default=False),  # by a key we already knew
    Column("request", LargeBinary, nullable=False),  # the last request, answered on accept
    # The network the first request came from (IPv4 /24, IPv6 /64; "" unknown): a per-network
    # limit keeps one outsider from filling the table (docs/replication.md).
    Column("source", String(64), nullable=False, default="", server_default=""),
)

repl_rejection = Table(
    # Every replication message that changed nothing, with why (logged and counted).
    "repl_rejection",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("reason", String(32), nullable=False),
    Column("origin", String(64), nullable=False, default=""),
    Column("queue_id", String(32), nullable=False, default=""),
    Column("detail", Text, nullable=False, default=""),
    Index("ix_repl_rejection_reason", "reason"),
)
