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
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "dir_object",
    "mailbox_secret",
    "metadata",
    "organization",
    "proxy_address",
    "site_usn",
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
