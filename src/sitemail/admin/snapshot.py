"""One site's state at a glance, for live views (the lab's status, later the console).

One job: read a data dir's queue, replication and recent deliveries into plain data. It is
handed to the lab by the composition root (`site.py`), because the lab does not import the
admin package (they are siblings, DESIGN.md section 4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sitemail.admin.service import AdminService

__all__ = ["site_snapshot"]


def site_snapshot(data_dir: Path, recent: int = 5) -> dict[str, Any]:
    """Queue depth (and how much of it is deferred), each replication peer's lag and whether
    it waits for an answer, pending partners, and the last final events of the queue."""
    service = AdminService.open(data_dir)
    try:
        entries = service.queue.entries()
        status = service.replication.status()
        events = service.queue.recent(recent)
    finally:
        service.close()
    deferred = sum(1 for e in entries if any(r.attempts for r in e.recipients))
    return {
        "queue": len(entries),
        "deferred": deferred,
        "replication": [
            {"peer": p.peer, "lag_seconds": p.lag, "waiting": p.waiting} for p in status.peers
        ],
        "pending_partners": [p.origin for p in status.pending if p.state == "pending"],
        "recent": [
            {"at": e.at, "event": e.event, "recipient": e.recipient, "detail": e.detail}
            for e in events
        ],
    }
