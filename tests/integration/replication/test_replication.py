"""Directory replication between real servers over SMTP on 127.10.10.x (issue 4)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from .conftest import idle, organisation, until


def run(scenario: Callable[[], Awaitable[None]], limit: float = 90) -> None:
    asyncio.run(asyncio.wait_for(scenario(), limit))


def test_replication_full_then_incremental(tmp_path: Path) -> None:
    """A pulls B's directory in several 512-object answers, then only what changed."""

    async def scenario() -> None:
        async with organisation(tmp_path) as org:
            a, b = org.create("SiteA"), org.create("SiteB")
            b.add_mailboxes(1100)
            org.connect(a, b)
            org.connect(b, a)
            await org.start(a)
            await org.start(b)
            assert a.request_now("SiteB").sent
            await until(idle(a, "SiteB"), what="A idle")
            assert a.replica("SiteB") == b.replica("SiteB")
            status = a.service.replication.status()
            peer = next(p for p in status.peers if p.peer == "SiteB")
            assert peer.answers_received == 3  # 1100 mailboxes + config: 512 + 512 + rest
            b.add_mailboxes(2, prefix="late")
            assert a.request_now("SiteB").sent
            await until(idle(a, "SiteB"), what="A idle again")
            assert {"late0", "late1"} <= a.aliases("SiteB")
            assert a.replica("SiteB") == b.replica("SiteB")
            peer = next(p for p in a.service.replication.status().peers if p.peer == "SiteB")
            assert peer.answers_received == 4

    run(scenario)
