"""tracking across sites: queries, answers, seen tracking messages

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "track_query",
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=False),
        sa.Column("asked_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_track_query")),
    )
    with op.batch_alter_table("track_query", schema=None) as batch_op:
        batch_op.create_index("ix_track_query_message_id", ["message_id"], unique=False)
        batch_op.create_index("ix_track_query_asked_at", ["asked_at"], unique=False)

    op.create_table(
        "track_query_site",
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("answered_at", sa.Float(), nullable=True),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["token"],
            ["track_query.token"],
            name=op.f("fk_track_query_site_token_track_query"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token", "site", name=op.f("pk_track_query_site")),
    )
    op.create_table(
        "track_remote_event",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("queue_id", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["token"],
            ["track_query.token"],
            name=op.f("fk_track_remote_event_token_track_query"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_track_remote_event")),
    )
    with op.batch_alter_table("track_remote_event", schema=None) as batch_op:
        batch_op.create_index("ix_track_remote_event_token_site", ["token", "site"], unique=False)

    op.create_table(
        "track_seen",
        sa.Column("origin", sa.String(length=64), nullable=False),
        sa.Column("seq", _BIGINT, nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("origin", "seq", name=op.f("pk_track_seen")),
    )
    with op.batch_alter_table("track_seen", schema=None) as batch_op:
        batch_op.create_index("ix_track_seen_expires", ["expires"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("track_seen", schema=None) as batch_op:
        batch_op.drop_index("ix_track_seen_expires")
    op.drop_table("track_seen")
    with op.batch_alter_table("track_remote_event", schema=None) as batch_op:
        batch_op.drop_index("ix_track_remote_event_token_site")
    op.drop_table("track_remote_event")
    op.drop_table("track_query_site")
    with op.batch_alter_table("track_query", schema=None) as batch_op:
        batch_op.drop_index("ix_track_query_asked_at")
        batch_op.drop_index("ix_track_query_message_id")
    op.drop_table("track_query")
