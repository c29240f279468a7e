"""`sitemail store migrate --to postgresql://...` on a site with mail, replicas and watermarks.

SiteA and SiteB (SQLite, running, replicated both ways, mail in SiteA's mailboxes) on the
multi-site harness; SiteA is stopped, moved to PostgreSQL, and compared table by table with
what it held; then it runs on PostgreSQL: its next UID follows the copied ones, new rows get
new ids, and replication with SiteB goes on from the copied watermarks and sequence numbers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.support.org import (
    Site,
    delivered,
    idle,
    organisation,
    replicated_pair,
    until,
)

from sitemail.admin.service import AdminService
from sitemail.config import load_config
from sitemail.directory import ObjectKind
from sitemail.store.tables import metadata

ADDRESSES = {"SiteA": "127.35.3.1", "SiteB": "127.35.3.2"}


def tables(service: AdminService) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, ordered by the whole row (JSON columns as text)."""
    out = {}
    with service.store.read() as conn:
        for table in metadata.sorted_tables:
            rows = [tuple(repr(v) for v in r) for r in conn.execute(select(table))]
            out[table.name] = sorted(rows)
    return out


async def send(site: Site, body: bytes) -> None:
    """Mail from outside to user1, from a thread (the server runs in this loop)."""
    await asyncio.to_thread(site.send, "x@outside.test", ["user1@sitea.example.com"], body)


def uids(site: Site, alias: str) -> list[int]:
    return [m.uid for m in site.inbox(alias)]


@pytest.mark.sqlite_only  # from the embedded default to PostgreSQL
def test_store_migrate_moves_mail_replicas_and_watermarks(tmp_path: Path, pg_url: str) -> None:
    """Nothing lost, no UID, id or watermark changed; the site runs on from PostgreSQL."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a, b = await replicated_pair(org)
            for n in range(5):
                await send(
                    a,
                    f"Subject: {n}\r\n\r\n{n}\r\n".encode(),
                )
            await until(delivered(a, "user1", 5), what="mail in SiteA")
            await org.stop(a)
            before = tables(a.service)
            assert before["repl_watermark"]
            assert before["repl_sequence"]
            report = a.service.migrate_store(pg_url)
            assert report.total == sum(len(rows) for rows in before.values())
            a.service.close()
            assert load_config(a.data_dir).database_url == pg_url
            a.service = AdminService.open(a.data_dir)
            assert tables(a.service) == before
            await org.start(a)
            await send(a, b"Subject: after\r\n\r\nz\r\n")
            await until(delivered(a, "user1", 6), what="mail after the move")
            assert uids(a, "user1") == [1, 2, 3, 4, 5, 6]
            a.service.add_recipient(ObjectKind.MAILBOX, "user3", display_name="User 3")
            a.request_now("SiteB")
            await until(idle(a, "SiteB"), what="SiteA replicated from SiteB after the move")
            b.request_now("SiteA")
            await until(idle(b, "SiteA"), what="SiteB replicated from SiteA after the move")
            assert "user3" in b.aliases("SiteA")

    asyncio.run(asyncio.wait_for(scenario(), 110))
