"""Schema migrations: bring a database to the current revision with Alembic.

One job: `upgrade(store)` applies every pending revision in `migrations/versions` inside one
transaction; `current_revision` tells where a database stands. Called by `sitemail init` and at
server start, so a new release migrates its data dir before it serves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from sitemail.core.errors import StoreError
from sitemail.store.engine import Store

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade"]

if TYPE_CHECKING:
    from alembic.config import Config

_MIGRATIONS = Path(__file__).parent / "migrations"
_REVISION = re.compile(r"^(down_revision|revision)\b[^=]*=\s*(?:None|[\"']([^\"']+)[\"'])", re.M)


def alembic_config() -> Config:
    from alembic.config import Config  # noqa: PLC0415 - see `upgrade`

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def upgrade(store: Store, revision: str = "head") -> None:
    """Apply all pending migrations. A database already at the newest revision is left
    alone without loading Alembic (half a second of every CLI command otherwise)."""
    if revision == "head" and _at_head(store):
        return
    from alembic import command  # noqa: PLC0415 - loaded only when there is work

    cfg = alembic_config()
    try:
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except SQLAlchemyError as exc:
        raise StoreError(f"database migration failed: {exc}") from exc


def current_revision(store: Store) -> str | None:
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415 - see `upgrade`

    with store.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest revision of `migrations/versions`, read from the files' `revision` and
    `down_revision` lines; None unless there is exactly one head."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (_MIGRATIONS / "versions").glob("*.py"):
        for name, value in _REVISION.findall(path.read_text(encoding="utf-8")):
            if value:
                (revisions if name == "revision" else parents).add(value)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _at_head(store: Store) -> bool:
    head = head_revision()
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError:
        return False  # a new database: no version table yet
    return head is not None and [r[0] for r in rows] == [head]
