"""Queues by destination (issue 22 item 4), on a real server and a real peer.

SiteA forwards `peer.test` to a Postfix smtp-sink by a domain route. While the sink is down,
mail for it is deferred (the retry is minutes away); `queue shape` counts it under its next
hop; when the sink is back, the first new message that it takes flushes the deferred ones,
which arrive within seconds instead of at their retry time. Addresses: 127.36.0.1 (SiteA),
127.36.0.2 (the peer).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from tests.support import processes
from tests.support.org import Org, Site, free_port, organisation, until

SITE = "127.36.0.1"
PEER = "127.36.0.2"
SENDER = "someone@internet.test"

pytestmark = [
    pytest.mark.postfix,
    pytest.mark.skipif(processes.SMTP_SINK is None, reason="Postfix's smtp-sink is not installed"),
]


def run(scenario: Callable[[], Awaitable[None]], limit: float = 90) -> None:
    asyncio.run(asyncio.wait_for(scenario(), limit))


def body(tag: str) -> bytes:
    return (
        f"From: {SENDER}\r\nSubject: flush {tag}\r\nMessage-ID: <{tag}@internet.test>\r\n\r\n"
        f"hello {tag}\r\n"
    ).encode()


def sent(dump: Path) -> set[str]:
    """The tags of the messages the sink took."""
    text = dump.read_text(errors="replace") if dump.exists() else ""
    return {
        line.split("Subject: flush ", 1)[1].strip()
        for line in text.splitlines()
        if "Subject: flush " in line
    }


def deferred(site: Site, count: int) -> Callable[[], bool]:
    def check() -> bool:
        rcpts = [r for e in site.service.queue.entries() for r in e.recipients]
        return len(rcpts) == count and all(r.attempts >= 1 and not r.doing for r in rcpts)

    return check


def shape_json(site: Site) -> dict[str, object]:
    """`sitemail queue shape --json`, run as the admin runs it, in its own process."""
    command = [sys.executable, "-c", "from sitemail.main import main; main()"]
    result = subprocess.run(
        [*command, "queue", "shape", "--json", "-D", str(site.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


async def start_site(org: Org, port: int) -> Site:
    """SiteA, running, forwarding peer.test to PEER:port (where nothing listens yet)."""
    site = org.create("SiteA")
    site.service.add_domain_route("peer.test", f"{PEER}:{port}")
    await org.start(site)
    return site


def test_queue_shape_counts_deferred_mail_by_next_hop(tmp_path: Path) -> None:
    """`queue shape --json` counts each queued recipient under the next hop it waits for."""

    async def scenario() -> None:
        port = free_port(PEER)
        async with organisation(tmp_path, {"SiteA": SITE}) as org:
            a = await start_site(org, port)
            for i in range(3):
                await asyncio.to_thread(a.send, SENDER, [f"bob{i}@peer.test"], body(f"s{i}"))
            await asyncio.to_thread(a.send, SENDER, ["x@peer.test", "y@peer.test"], body("s3"))
            await until(deferred(a, 5), what="5 recipients deferred")
            shape = await asyncio.to_thread(shape_json, a)
        hop = f"relay {PEER}:{port}"
        rows = {row["nexthop"]: row for row in shape["nexthops"]}  # type: ignore[attr-defined]
        assert rows[hop]["total"] == 5
        assert rows[hop]["buckets"]["0-5"] == 5
        assert shape["total"]["total"] == 5  # type: ignore[index]
        assert list(shape["buckets"])[-1] == "1280+"  # type: ignore[call-overload]

    run(scenario)


def test_queue_flush_on_peer_return(tmp_path: Path) -> None:
    """Mail deferred while the peer was down goes within seconds of the peer's first new
    acceptance, not at its retry time five minutes later."""

    async def scenario() -> None:
        port = free_port(PEER)
        async with organisation(tmp_path, {"SiteA": SITE}) as org:
            a = await start_site(org, port)
            tags = [f"d{i}" for i in range(5)]
            for tag in tags:
                await asyncio.to_thread(a.send, SENDER, [f"{tag}@peer.test"], body(tag))
            await until(deferred(a, 5), what="5 recipients deferred while the peer is down")
            now = a.service.clock.now()
            waits = [
                r.next_attempt_at - now for e in a.service.queue.entries() for r in e.recipients
            ]
            assert min(waits) > 60, waits  # their retry is minutes away (retry_initial 300 s)
            with processes.postfix_sink(tmp_path, PEER, port=port) as (_, dump):
                await asyncio.to_thread(a.send, SENDER, ["new@peer.test"], body("new"))
                await until(lambda: sent(dump) >= {"new", *tags}, 30, "the deferred mail flushed")
                await until(lambda: not a.service.queue.entries(), 10, "the queue empty")

    run(scenario)
