"""Alembic environment: run migrations on the connection `store.migrate` hands over."""

from __future__ import annotations

from alembic import context

from sitemail.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when someone runs the alembic CLI by hand
    raise SystemExit("run migrations through `sitemail` (store.migrate.upgrade), not alembic")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
