"""Attempts in flight: opened by the queue manager, told what they do by the transports."""

from __future__ import annotations

import asyncio

from sitemail.core.clock import ManualClock
from sitemail.queue.attempts import Attempt, Attempts, report_stage


def test_attempts_follow_each_task_and_vanish_when_done() -> None:
    """Each hand-over's stage reaches its own attempt, through the tasks a transport
    gathers; a report outside any attempt does nothing."""
    clock = ManualClock()
    attempts = Attempts(clock)
    report_stage("nobody listens")  # outside an attempt: no effect, no error

    async def transport(stage: str, go: asyncio.Event) -> None:
        async def step() -> None:
            clock.advance(1)
            report_stage(stage)

        await asyncio.gather(step())  # a task of its own, as RemoteDelivery's groups
        await go.wait()

    async def hand_over(queue_id: str, stage: str, go: asyncio.Event) -> None:
        with attempts.track(queue_id, [f"r@{queue_id}.test"], "relay hop"):
            await transport(stage, go)

    async def scenario() -> list[Attempt]:
        go = asyncio.Event()
        tasks = [
            asyncio.create_task(hand_over("Q1", "connecting to a", go)),
            asyncio.create_task(hand_over("Q2", "waiting for the reply to DATA", go)),
        ]
        while len(attempts.snapshot()) < 2 or any(  # noqa: ASYNC110 - state of other tasks
            a.stage == "starting" for a in attempts.snapshot()
        ):
            await asyncio.sleep(0)
        during = attempts.snapshot()
        go.set()
        await asyncio.gather(*tasks)
        assert attempts.snapshot() == []
        return during

    during = asyncio.run(scenario())
    assert [(a.queue_id, a.stage) for a in during] == [
        ("Q1", "connecting to a"),
        ("Q2", "waiting for the reply to DATA"),
    ]
    assert all(a.since > a.started for a in during)


def test_attempt_json_round_trip() -> None:
    """What the control channel carries comes back as the same value."""
    attempt = Attempt("Q1", ("a@x.test", "b@x.test"), "relay hop:25", 1.5, "connecting", 2.5)
    assert Attempt.from_json(attempt.to_json()) == attempt
