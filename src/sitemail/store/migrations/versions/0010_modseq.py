"""per-message MODSEQ and per-folder HIGHESTMODSEQ (IMAP CONDSTORE, RFC 7162)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing folders and messages start at 1: a client that never saw a modseq resyncs fully.
    with op.batch_alter_table("mail_folder", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("highestmodseq", sa.BigInteger(), nullable=False, server_default="1")
        )
    with op.batch_alter_table("mail_message", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("modseq", sa.BigInteger(), nullable=False, server_default="1")
        )


def downgrade() -> None:
    with op.batch_alter_table("mail_message", schema=None) as batch_op:
        batch_op.drop_column("modseq")
    with op.batch_alter_table("mail_folder", schema=None) as batch_op:
        batch_op.drop_column("highestmodseq")
