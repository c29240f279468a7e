"""queue_rcpt.nexthop: the next hop a recipient was last deferred at (queue shape, flush)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("queue_rcpt") as batch:
        batch.add_column(sa.Column("nexthop", sa.String(300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("queue_rcpt") as batch:
        batch.drop_column("nexthop")
