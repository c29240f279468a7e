"""The store: table definitions, engines (SQLite default, PostgreSQL by URL) and migrations."""

from sitemail.store import tables
from sitemail.store.engine import Store, default_url, is_conflict, open_store
from sitemail.store.migrate import current_revision, upgrade

__all__ = [
    "Store",
    "current_revision",
    "default_url",
    "is_conflict",
    "open_store",
    "tables",
    "upgrade",
]
