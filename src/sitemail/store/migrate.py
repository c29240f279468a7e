"""Schema migrations: bring a database to the current revision with Alembic.

One job: `upgrade(store)` applies every pending revision in `migrations/versions` inside one
transaction; `current_revision` tells where a database stands. Called by `sitemail init` and at
server start, so a new release migrates its data dir before it serves.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.exc import SQLAlchemyError

from sitemail.core.errors import StoreError
from sitemail.store.engine import Store

__all__ = ["alembic_config", "current_revision", "upgrade"]

_MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def upgrade(store: Store, revision: str = "head") -> None:
    """Apply all pending migrations."""
    cfg = alembic_config()
    try:
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except SQLAlchemyError as exc:
        raise StoreError(f"database migration failed: {exc}") from exc


def current_revision(store: Store) -> str | None:
    with store.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
