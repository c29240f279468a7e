"""Stopping the queue manager: what is in flight finishes and is recorded; nothing new starts."""

from __future__ import annotations

import asyncio

from tests.unit.queue.test_handoff import RecordingRelay, _message, _queued, _running

from sitemail.admin.service import AdminService


def test_manager_stop_finishes_deliveries_in_flight_and_starts_no_more(
    site_a: AdminService,
) -> None:
    """After stop(), run() returns once the delivery in flight is recorded; mail queued later
    stays queued for the next start."""

    async def scenario() -> tuple[list[str], str, str]:
        relay = RecordingRelay()
        relay.hold = asyncio.Event()
        async with _running(site_a, relay, serve=False) as (spool, manager):
            running = asyncio.create_task(manager.run())
            try:
                in_flight = await spool.enqueue(_message(1))
                async with asyncio.timeout(10):
                    await relay.started.wait()
                manager.stop()
                later = await spool.enqueue(_message(2))
                relay.hold.set()
                async with asyncio.timeout(10):
                    await running  # returns by itself
            finally:
                running.cancel()
        return relay.delivered, in_flight, later

    delivered, in_flight, later = asyncio.run(scenario())
    assert delivered == [in_flight]
    assert _queued(site_a) == [later]
