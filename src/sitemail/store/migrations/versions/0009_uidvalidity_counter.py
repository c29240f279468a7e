"""per-mailbox UIDVALIDITY counter (IMAP: never reuse a UIDVALIDITY or MAILBOXID)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mail_uidvalidity",
        sa.Column("mailbox", sa.String(36), primary_key=True),
        sa.Column("last", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mail_uidvalidity")
