"""queue claims with leases (several servers of a site share one queue)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_claim",
        sa.Column("queue_id", sa.String(32), nullable=False),
        sa.Column("server", sa.String(64), nullable=False),
        sa.Column("until", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["queue_message.queue_id"],
            name="fk_queue_claim_queue_id_queue_message",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("queue_id", name="pk_queue_claim"),
    )
    op.create_index("ix_queue_claim_until", "queue_claim", ["until"])


def downgrade() -> None:
    op.drop_index("ix_queue_claim_until", table_name="queue_claim")
    op.drop_table("queue_claim")
