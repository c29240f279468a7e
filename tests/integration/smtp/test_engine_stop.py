"""The SMTP engine stopping and under connection pressure, over real loopback sockets.

Stopping (issue 16 item 4): a session storing a message gets its reply out before the 421;
every other session gets the 421 at once. Pressure (item 5): near `connections_total`, idle
and pre-MAIL sessions get `stress_timeout`, and addresses holding many connections leave the
last slots to the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from tests.integration.smtp.test_engine import (
    MESSAGE,
    SERVER_NAME,
    Client,
    Harness,
    RecordingPolicy,
    limits_with,
    run,
)

from sitemail.core.envelope import Envelope
from sitemail.core.reply import Reply
from sitemail.smtp.engine import drain_smtp_server, start_smtp_server, stop_smtp_server

HOST = "127.24.1.1"


@dataclass
class HeldPolicy(RecordingPolicy):
    """Stores a message only once `release` is set (a commit that takes its time)."""

    release: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    storing: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def accept(self, envelope: Envelope, content: bytes, *, queue_id: str) -> Reply:
        self.storing.set()
        await self.release.wait()
        return await super().accept(envelope, content, queue_id=queue_id)


@asynccontextmanager
async def listening(policy: RecordingPolicy, **limits: Any) -> AsyncIterator[tuple[Any, Harness]]:
    server = await start_smtp_server(
        HOST, 0, policy=policy, server_name=SERVER_NAME, limits=limits_with(**limits)
    )
    try:
        yield server, Harness(server.sockets[0].getsockname()[1], policy)
    finally:
        stop_smtp_server(server)
        await drain_smtp_server(server, 1)


async def connect(harness: Harness, source: str = "127.24.1.2") -> Client:
    """A connection from `source`, its reply to the greeting not read."""
    reader, writer = await asyncio.open_connection(HOST, harness.port, local_addr=(source, 0))
    return Client(reader, writer)


async def session(harness: Harness, source: str = "127.24.1.2") -> Client:
    """Greeted and past EHLO."""
    client = await connect(harness, source)
    assert (await client.reply()).code == 220
    assert (await client.cmd("EHLO client.example")).code == 250
    return client


async def end_of_data(client: Client) -> None:
    """A whole transaction up to the end of DATA, pipelined, its first three replies read."""
    await client.send(b"MAIL FROM:<a@src.example>\r\nRCPT TO:<b@dest.example>\r\nDATA\r\n")
    assert [r.code for r in await client.replies(3)] == [250, 250, 354]
    await client.send(MESSAGE + b".\r\n")


def test_stop_lets_a_message_being_stored_answer_250_then_421() -> None:
    """At stop, an idle session hears 421 at once; one storing a message hears its 250 first."""

    async def scenario() -> None:
        policy = HeldPolicy()
        async with listening(policy) as (server, srv):
            storing = await session(srv)
            idle = await session(srv)
            await end_of_data(storing)
            await asyncio.wait_for(policy.storing.wait(), 5)
            stop_smtp_server(server)
            shut = await idle.reply()
            assert (shut.code, shut.enhanced) == (421, "4.3.2")
            assert await idle.at_eof()
            drained = asyncio.create_task(drain_smtp_server(server, 5))
            policy.release.set()
            stored = await storing.reply()
            assert stored.code == 250
            assert "queued as" in stored.text
            assert (await storing.reply()).code == 421
            assert await storing.at_eof()
            assert await drained == 0
            assert len(policy.accepted) == 1

    run(scenario)


def test_stop_answers_421_to_a_message_still_arriving_and_stores_nothing() -> None:
    """A message whose DATA is not over at stop is answered 421 and never stored."""

    async def scenario() -> None:
        policy = RecordingPolicy()
        async with listening(policy) as (server, srv):
            client = await session(srv)
            await client.send(b"MAIL FROM:<a@src.example>\r\nRCPT TO:<b@dest.example>\r\nDATA\r\n")
            assert [r.code for r in await client.replies(3)] == [250, 250, 354]
            await client.send(MESSAGE)
            await asyncio.sleep(0.05)
            stop_smtp_server(server)
            shut = await client.reply()
            assert (shut.code, shut.enhanced) == (421, "4.3.2")
            with contextlib.suppress(ConnectionError):
                await client.send(b".\r\n")
            assert await drain_smtp_server(server, 1) == 0
            assert policy.accepted == []

    run(scenario)


def test_drain_cuts_off_a_store_that_outlasts_it() -> None:
    """A store still running when the drain's time is up is cut off and counted."""

    async def scenario() -> None:
        policy = HeldPolicy()
        async with listening(policy) as (server, srv):
            client = await session(srv)
            await end_of_data(client)
            await asyncio.wait_for(policy.storing.wait(), 5)
            stop_smtp_server(server)
            assert await drain_smtp_server(server, 0.2) == 1
            assert await client.at_eof()

    run(scenario)


def test_stress_shortens_the_timeout_of_idle_sessions_only() -> None:
    """Near connections_total, sessions idle or before MAIL are closed after stress_timeout
    with 421 4.4.2 (those already waiting too); one in a transaction keeps the full timeout."""

    async def scenario() -> None:
        policy = RecordingPolicy()
        async with listening(policy, connections_total=5, timeout=30.0, stress_timeout=0.3) as (
            _,
            srv,
        ):
            busy = await session(srv, "127.24.1.10")
            assert (await busy.cmd("MAIL FROM:<a@src.example>")).code == 250
            idle = [await session(srv, f"127.24.1.{11 + i}") for i in range(2)]
            await asyncio.sleep(0.6)
            assert (await idle[0].cmd("NOOP")).code == 250  # not stressed yet: 30 s
            idle.append(await session(srv, "127.24.1.13"))  # the 4th of 5: stressed
            for client in idle:
                closed = await client.reply(wait=5)
                assert (closed.code, closed.enhanced) == (421, "4.4.2")
                assert await client.at_eof()
            assert (await busy.cmd("RCPT TO:<b@dest.example>")).code == 250
            await busy.close()

    run(scenario)


def test_stress_gives_a_session_the_full_timeout_once_it_has_given_mail() -> None:
    """Under stress, a session that has given MAIL may take longer than stress_timeout
    before its next command."""

    async def scenario() -> None:
        policy = RecordingPolicy()
        async with listening(policy, connections_total=5, timeout=30.0, stress_timeout=1.0) as (
            _,
            srv,
        ):
            clients = []
            for i in range(4):  # the 4th of 5 makes the listener stressed
                client = await session(srv, f"127.24.1.{40 + i}")
                assert (await client.cmd("MAIL FROM:<a@src.example>")).code == 250
                clients.append(client)
            await asyncio.sleep(1.5)
            for client in clients:
                assert (await client.cmd("RCPT TO:<b@dest.example>")).code == 250
                await client.close()

    run(scenario)


def test_stress_keeps_the_last_slots_for_addresses_holding_few() -> None:
    """Near connections_total, an address holding a quarter of its limit gets 421, while
    another address still gets in."""

    async def scenario() -> None:
        policy = RecordingPolicy()
        async with listening(
            policy, connections_total=10, connections_per_client=8, stress_timeout=30.0
        ) as (_, srv):
            hog = [await session(srv, "127.24.1.20") for _ in range(8)]
            refused = await connect(srv, "127.24.1.20")
            reply = await refused.reply()
            assert (reply.code, reply.enhanced) == (421, "4.7.0")
            assert await refused.at_eof()
            other = await session(srv, "127.24.1.21")
            for client in [*hog, other]:
                await client.close()

    run(scenario)


def test_full_house_closes_an_idle_session_for_a_new_address() -> None:
    """With every slot taken by idle sessions, a new address gets in: the session of the
    address holding the most that has idled longest (past a fifth of stress_timeout) goes."""

    async def scenario() -> None:
        policy = RecordingPolicy()
        async with listening(
            policy, connections_total=4, connections_per_client=4, stress_timeout=4.0
        ) as (_, srv):
            hog = [await session(srv, "127.24.1.30") for _ in range(3)]
            single = await session(srv, "127.24.1.31")
            await asyncio.sleep(1.5)  # past a fifth of the stress timeout, not yet the whole
            newcomer = await session(srv, "127.24.1.32")
            evicted = await hog[0].reply()
            assert (evicted.code, evicted.enhanced) == (421, "4.7.0")
            assert (await single.cmd("NOOP")).code == 250
            assert (await newcomer.cmd("MAIL FROM:<a@src.example>")).code == 250
            for client in [*hog[1:], single, newcomer]:
                await client.close()

    run(scenario)


def test_refused_connections_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """A flood of refused connections makes one log line (with a count), not one each."""

    async def scenario() -> None:
        policy = RecordingPolicy()
        async with listening(policy, connections_per_client=1) as (_, srv):
            held = await session(srv, "127.24.1.50")
            for _ in range(5):
                refused = await connect(srv, "127.24.1.50")
                assert (await refused.reply()).code == 421
                assert await refused.at_eof()
            await held.close()

    with caplog.at_level(logging.WARNING, logger="sitemail.smtp"):
        run(scenario)
    lines = [r.getMessage() for r in caplog.records if "connection refused" in r.getMessage()]
    assert len(lines) == 1, lines
