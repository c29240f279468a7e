"""The group-committing writer: shared commits, a bad job failing alone, no lock waits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, select
from tests.support.databases import store_url

from sitemail.core.errors import StoreUnavailableError
from sitemail.store import Store, open_store, upgrade
from sitemail.store.tables import site_usn
from sitemail.store.writer import GroupWriter


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(store_url(tmp_path))
    upgrade(s)
    yield s
    s.close()


def add(site: str) -> Callable[[Connection], str]:
    def job(conn: Connection) -> str:
        conn.execute(insert(site_usn).values(site=site, usn=1))
        return site

    return job


def fail(conn: Connection) -> str:
    conn.execute(insert(site_usn).values(site="half-written", usn=1))
    raise ValueError("bad job")


def sites(store: Store) -> set[str]:
    with store.read() as conn:
        return set(conn.execute(select(site_usn.c.site)).scalars())


def test_writer_jobs_waiting_together_share_one_commit(store: Store) -> None:
    """Jobs submitted at once all commit, in fewer transactions than jobs, with their results."""

    async def scenario() -> list[str]:
        writer = GroupWriter(store)
        await writer.start()
        try:
            return await asyncio.gather(*(writer.submit(add(f"S{i}")) for i in range(20)))
        finally:
            assert writer.jobs == 20
            assert writer.commits < 20
            await writer.stop()

    assert asyncio.run(scenario()) == [f"S{i}" for i in range(20)]
    assert sites(store) == {f"S{i}" for i in range(20)}


def test_writer_bad_job_fails_alone(store: Store) -> None:
    """A job that raises gets its exception and leaves nothing; the others of its batch commit."""

    async def scenario() -> list[object]:
        writer = GroupWriter(store)
        await writer.start()
        try:
            jobs: list[Callable[[Connection], str]] = [add("A"), fail, add("B")]
            return await asyncio.gather(
                *(writer.submit(job) for job in jobs),
                return_exceptions=True,
            )
        finally:
            await writer.stop()

    first, second, third = asyncio.run(scenario())
    assert (first, third) == ("A", "B")
    assert isinstance(second, ValueError)
    assert sites(store) == {"A", "B"}


def unavailable(conn: Connection) -> str:
    conn.execute(insert(site_usn).values(site="half-written", usn=1))
    raise StoreUnavailableError("database write failed: OperationalError: disk I/O error")


def test_writer_unavailable_store_fails_the_whole_batch_at_once(store: Store) -> None:
    """A job meeting a store that cannot be written (disk full, I/O error) is not to blame:
    every job of its batch gets the error in one go, none is run again without it."""

    async def scenario() -> list[object]:
        writer = GroupWriter(store)
        await writer.start()
        try:
            jobs: list[Callable[[Connection], str]] = [add("A"), unavailable, add("B")]
            return await asyncio.gather(
                *(writer.submit(job) for job in jobs), return_exceptions=True
            )
        finally:
            assert writer.commits == 0
            await writer.stop()

    results = asyncio.run(scenario())
    assert all(isinstance(r, StoreUnavailableError) for r in results)
    assert sites(store) == set()


def test_writer_not_started_commits_each_job_alone(store: Store) -> None:
    """Without start() (admin commands, tests) every submit is its own transaction."""
    writer = GroupWriter(store)
    assert asyncio.run(writer.submit(add("solo"))) == "solo"
    with pytest.raises(ValueError, match="bad job"):
        asyncio.run(writer.submit(fail))
    assert sites(store) == {"solo"}
    assert writer.commits == 1


def test_writer_lazy_job_shares_the_commit_of_the_next_job(store: Store) -> None:
    """A lazy job waits (here: as long as it takes) for a job someone waits on: one commit."""

    async def scenario() -> list[str]:
        writer = GroupWriter(store, linger=60.0)
        await writer.start()
        try:
            lazy = asyncio.create_task(writer.submit(add("record"), lazy=True))
            await asyncio.sleep(0)  # the lazy job is pending, alone
            accepted = await writer.submit(add("accepted"))
            return [await lazy, accepted]
        finally:
            assert (writer.jobs, writer.commits) == (2, 1)
            await writer.stop()

    assert asyncio.run(scenario()) == ["record", "accepted"]
    assert sites(store) == {"record", "accepted"}


def test_writer_lazy_job_alone_commits_after_its_linger(store: Store) -> None:
    async def scenario() -> str:
        writer = GroupWriter(store, linger=0.001)
        await writer.start()
        try:
            return await writer.submit(add("record"), lazy=True)
        finally:
            await writer.stop()

    assert asyncio.run(scenario()) == "record"
    assert sites(store) == {"record"}


def test_writer_stop_commits_every_job_submitted_before_it(store: Store) -> None:
    """Jobs waiting when stop() is called are committed and their callers get their results."""

    async def scenario() -> list[str]:
        writer = GroupWriter(store)
        await writer.start()
        jobs = [asyncio.create_task(writer.submit(add(f"S{i}"), lazy=True)) for i in range(5)]
        await asyncio.sleep(0)  # submitted, not yet committed
        await writer.stop()
        return await asyncio.gather(*jobs)

    assert asyncio.run(scenario()) == [f"S{i}" for i in range(5)]
    assert sites(store) == {f"S{i}" for i in range(5)}
