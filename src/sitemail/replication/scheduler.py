"""When replication happens by itself: connector schedules, the KCC and tombstone collection.

One job: a loop in the server's TaskGroup that, once a second, asks each connector's peer for
changes when its schedule says so (and once, `startup_delay` after start, whatever the
schedule), runs the KCC every `kcc_interval` (logging its warnings) and collects tombstones
every `gc_interval`. The one-outstanding-request rule lives in the Replicator, so a peer that
does not answer is not flooded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from sitemail.replication.connectors import list_connectors
from sitemail.replication.kcc import run_kcc
from sitemail.replication.replicator import Replicator
from sitemail.replication.tombstones import collect_tombstones

__all__ = ["ReplicationScheduler"]

log = logging.getLogger("sitemail.replication")

_TICK = 1.0


class ReplicationScheduler:
    def __init__(
        self,
        replicator: Replicator,
        *,
        on_enqueued: Callable[[], None],
        local_hosts: Iterable[str] = (),
    ) -> None:
        self._replicator = replicator
        self._on_enqueued = on_enqueued
        self._local_hosts = tuple(local_hosts)
        clock = replicator.clock
        self._started = clock.now()
        self._due: dict[str, float] = {}  # per peer: when to ask next
        self._ticked = False
        self._next_kcc = self._started + replicator.settings.startup_delay
        self._next_gc = self._started + replicator.settings.gc_interval

    async def run(self) -> None:
        while True:
            try:
                if await asyncio.to_thread(self.tick):
                    self._on_enqueued()
            except Exception:  # a bad tick must not stop replication for good
                log.exception("replication scheduler tick failed")
            await asyncio.sleep(_TICK)

    def tick(self) -> int:
        """Send what is due now; returns how many requests were queued."""
        replicator = self._replicator
        settings = replicator.settings
        now = replicator.clock.now()
        sent = 0
        due = []
        # Connectors there at the first tick wait for the start-up request time; one added
        # to the running server later asks at once (the admin just made it).
        first = self._started + settings.startup_delay if not self._ticked else now
        self._ticked = True
        for connector in list_connectors(replicator.directory):
            at = self._due.setdefault(connector.site, first)
            if now >= at:
                interval = connector.interval
                self._due[connector.site] = now + interval if interval else float("inf")
                due.append(connector)
        if due:  # the write lock only when something is to be sent
            with replicator.directory.store.write() as conn:
                for connector in due:
                    outcome = replicator.request(conn, connector)
                    sent += outcome.sent
                    if not outcome.sent:
                        log.info("replication to %s: %s", connector.site, outcome.detail)
        if now >= self._next_kcc:
            self._next_kcc = now + settings.kcc_interval
            self.check_knowledge()
        if now >= self._next_gc:
            self._next_gc = now + settings.gc_interval
            self.collect(now)
        return sent

    def check_knowledge(self) -> None:
        report = run_kcc(self._replicator.directory, local_hosts=self._local_hosts)
        for warning in report.warnings:
            log.warning("KCC %s: %s (fix: %s)", warning.code, warning.message, warning.fix)

    def collect(self, now: float) -> None:
        replicator = self._replicator
        partners = [c.site for c in list_connectors(replicator.directory)]
        with replicator.directory.store.write() as conn:
            purged = collect_tombstones(
                conn,
                partners=partners,
                older_than=now - replicator.settings.tombstone_lifetime,
            )
        for nc, count in purged.items():
            log.info("tombstones collected: nc=%s count=%d", nc, count)
