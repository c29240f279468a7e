"""`QueueAdmin.recent`: the live views' last deliveries, newest first, without replication mail."""

from __future__ import annotations

from pathlib import Path

from tests.support.databases import store_url

from sitemail.core.clock import ManualClock
from sitemail.queue.admin import QueueAdmin
from sitemail.queue.records import TrackEvent, track
from sitemail.store import open_store, upgrade


def test_recent_final_events_newest_first_without_the_directory_service_mailbox(
    tmp_path: Path,
) -> None:
    store = open_store(store_url(tmp_path))
    upgrade(store)
    try:
        with store.write() as conn:
            track(
                conn,
                [
                    TrackEvent(1.0, "received", "Q1", recipient="a@example.com"),
                    TrackEvent(2.0, "delivered", "Q1", recipient="a@example.com"),
                    TrackEvent(3.0, "delivered", "Q2", recipient="sitemail-dsa@sitea.example"),
                    TrackEvent(4.0, "relayed", "Q3", recipient="b@example.com"),
                    TrackEvent(5.0, "bounced", "Q4", recipient="c@example.com"),
                ],
            )
        admin = QueueAdmin(store, ManualClock(10.0), "SiteA")
        assert [e.queue_id for e in admin.recent()] == ["Q4", "Q3", "Q1"]
        assert [e.queue_id for e in admin.recent(2)] == ["Q4", "Q3"]
        assert [e.queue_id for e in admin.recent(system=True)] == ["Q4", "Q3", "Q2", "Q1"]
    finally:
        store.close()
