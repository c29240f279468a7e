"""Migrations: the fast "already at head" check agrees with Alembic's own view."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import text
from tests.support.databases import store_url

from sitemail.store import open_store, upgrade
from sitemail.store.migrate import alembic_config, current_revision, head_revision


def test_head_read_from_the_files_is_alembics_head() -> None:
    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_upgrade_migrates_an_older_database_and_leaves_one_at_head_alone(
    tmp_path: Path,
) -> None:
    store = open_store(store_url(tmp_path))
    try:
        upgrade(store, "0002")
        assert current_revision(store) == "0002"
        upgrade(store)  # not at head: Alembic applies the rest
        assert current_revision(store) == head_revision()
        with store.engine.connect() as conn:
            conn.execute(text("SELECT count(*) FROM repl_peer")).scalar_one()
        upgrade(store)  # the fast path: nothing to do
        assert current_revision(store) == head_revision()
    finally:
        store.close()
