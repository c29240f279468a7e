"""pending replication partners: the network each request came from

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("repl_pending", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("source", sa.String(length=64), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("repl_pending", schema=None) as batch_op:
        batch_op.drop_column("source")
