"""relay_seen: origins of messages accepted from sibling sites, against resends

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relay_seen",
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("origin_id", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("queue_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("site", "origin_id", "recipient", name=op.f("pk_relay_seen")),
    )
    with op.batch_alter_table("relay_seen", schema=None) as batch_op:
        batch_op.create_index("ix_relay_seen_at", ["at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("relay_seen", schema=None) as batch_op:
        batch_op.drop_index("ix_relay_seen_at")
    op.drop_table("relay_seen")
