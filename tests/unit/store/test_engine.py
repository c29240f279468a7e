"""The store's engines: SQLite settings and the hot-path point read `fetch_one`."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from tests.support.databases import store_url

from sitemail.core import StoreError
from sitemail.core.errors import StoreUnavailableError
from sitemail.store import Store, open_store, upgrade
from sitemail.store.tables import site_usn

pytestmark = pytest.mark.sqlite_only  # pragmas and the SQLite-only point reads

SQL = "SELECT usn FROM site_usn WHERE site = ?"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = open_store(store_url(tmp_path))
    upgrade(s)
    yield s  # type: ignore[misc]
    s.close()


def test_store_sqlite_runs_wal_with_full_sync(store: Store) -> None:
    """SQLite connections use WAL, synchronous=FULL, foreign keys and a 32 MiB page cache."""
    with store.read() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar_one() == 2  # FULL
        assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
        assert conn.execute(text("PRAGMA cache_size")).scalar_one() == -32768


def test_store_fetch_one_sees_each_commit(store: Store) -> None:
    """A point read answers None, then the committed row, then the next committed value."""
    assert store.fetch_one(SQL, ("SiteA",)) is None
    with store.write() as conn:
        conn.execute(insert(site_usn).values(site="SiteA", usn=7))
    assert tuple(store.fetch_one(SQL, ("SiteA",)) or ()) == (7,)
    with store.write() as conn:
        conn.execute(site_usn.update().values(usn=8))
    assert tuple(store.fetch_one(SQL, ("SiteA",)) or ()) == (8,)


def test_store_fetch_one_holds_no_snapshot(store: Store) -> None:
    """After a point read the WAL can be checkpointed completely (no reader pins it)."""
    with store.write() as conn:
        conn.execute(insert(site_usn).values(site="SiteA", usn=1))
    store.fetch_one(SQL, ("SiteA",))
    with store.engine.connect() as conn:
        busy, _, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    assert busy == 0


def test_store_fetch_one_uses_one_connection_per_thread(store: Store) -> None:
    """Threads read concurrently on their own connections, never taking a pool slot."""
    with store.write() as conn:
        conn.execute(insert(site_usn).values(site="SiteA", usn=3))
    results: list[object] = []

    def read() -> None:
        results.extend(store.fetch_one(SQL, ("SiteA",)) or ())

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [3, 3, 3, 3]
    assert store.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_store_fetch_one_error_is_store_error(store: Store) -> None:
    """A failing read is a StoreError, like every other database fault."""
    with pytest.raises(StoreError):
        store.fetch_one("SELECT nothing FROM nowhere", ())


def test_store_close_closes_point_readers(store: Store) -> None:
    """close() closes the per-thread connections; a later read opens a fresh one."""
    with store.write() as conn:
        conn.execute(insert(site_usn).values(site="SiteA", usn=5))
    store.fetch_one(SQL, ("SiteA",))
    store.close()
    assert tuple(store.fetch_one(SQL, ("SiteA",)) or ()) == (5,)
    with store.read() as conn:
        assert conn.execute(select(site_usn.c.usn)).scalar_one() == 5


def test_store_write_without_foreign_key_checks_is_that_transaction_only(store: Store) -> None:
    """check_foreign_keys=False holds inside its transaction; the pooled connection gets its
    foreign keys back after a commit and after a rollback alike."""
    with store.write(check_foreign_keys=False) as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 0
        conn.execute(insert(site_usn).values(site="SiteA", usn=1))
    with pytest.raises(RuntimeError), store.write(check_foreign_keys=False) as conn:
        raise RuntimeError("rolled back")
    with store.write() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        assert conn.execute(select(site_usn.c.usn)).scalar_one() == 1
    assert store.engine.pool.checkedin() == 1  # type: ignore[attr-defined]


def _fill(store: Store) -> None:
    with store.write() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")
        conn.execute(insert(site_usn), [{"site": f"S{i}" * 100, "usn": i} for i in range(2000)])


def _insert_twice(store: Store) -> None:
    with store.write() as conn:
        conn.exec_driver_sql("PRAGMA max_page_count = 1073741823")
        conn.execute(insert(site_usn).values(site="A", usn=1))
        conn.execute(insert(site_usn).values(site="A", usn=1))


def test_store_full_database_is_unavailable_not_a_bad_write(store: Store) -> None:
    """SQLITE_FULL (a full disk; here SQLite's own page limit) is StoreUnavailableError, which
    says "not now"; a broken constraint stays a plain StoreError ("not this")."""
    with pytest.raises(StoreUnavailableError, match="full"):
        _fill(store)
    with pytest.raises(StoreError) as caught:
        _insert_twice(store)
    assert not isinstance(caught.value, StoreUnavailableError)
