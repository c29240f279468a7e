"""Routes for the queue, message tracking and the doctor.

One job: parse, call AdminService (its `queue` and `tracking` parts, and `run_doctor`),
answer with `web.models`; after retry, release and asking other sites, wake the queue.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from sitemail.admin.doctor import ROUND_TRIP_DEFAULT, ROUND_TRIP_MAX, ROUND_TRIP_MIN, run_doctor
from sitemail.web.deps import Service, Wake
from sitemail.web.models import (
    FindingOut,
    MessagePathOut,
    QueueEntryOut,
    QueueMessageOut,
    RetryOut,
    TrackAskIn,
    TrackAskOut,
    TrackEventOut,
)

__all__ = ["router"]

router = APIRouter()

QueueId = Annotated[str, PathParam(min_length=1, max_length=64, description="Queue id.")]


@router.get("/queue", tags=["queue"])
def list_queue(service: Service) -> list[QueueEntryOut]:
    """Queued messages with each recipient's state and last error."""
    return [QueueEntryOut.model_validate(e) for e in service.queue.entries()]


@router.post("/queue/retry", tags=["queue"])
def retry_all(service: Service, wake: Wake) -> RetryOut:
    """Make every deferred recipient due now."""
    count = service.queue.retry(None)
    wake()
    return RetryOut(due_now=count)


@router.get("/queue/{queue_id}", tags=["queue"])
def show_queued(service: Service, queue_id: QueueId) -> QueueMessageOut:
    """One queued message: envelope, recipients and headers."""
    entry, content = service.queue.show(queue_id)
    head = content.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    return QueueMessageOut.model_validate(
        QueueEntryOut.model_validate(entry).model_dump() | {"headers": head}
    )


@router.post("/queue/{queue_id}/retry", tags=["queue"])
def retry(service: Service, wake: Wake, queue_id: QueueId) -> RetryOut:
    """Make this message's deferred recipients due now."""
    count = service.queue.retry(queue_id)
    wake()
    return RetryOut(due_now=count)


@router.post("/queue/{queue_id}/hold", tags=["queue"])
def hold(service: Service, queue_id: QueueId) -> QueueEntryOut:
    """Keep a message in the queue without delivery attempts."""
    service.queue.set_held(queue_id, held=True)
    return QueueEntryOut.model_validate(service.queue.show(queue_id)[0])


@router.post("/queue/{queue_id}/release", tags=["queue"])
def release(service: Service, wake: Wake, queue_id: QueueId) -> QueueEntryOut:
    """Let a held message be delivered again."""
    service.queue.set_held(queue_id, held=False)
    wake()
    return QueueEntryOut.model_validate(service.queue.show(queue_id)[0])


@router.delete("/queue/{queue_id}", tags=["queue"])
def delete(service: Service, queue_id: QueueId) -> QueueEntryOut:
    """Delete a message from the queue (tracked; no DSN is sent); answers it as it was."""
    entry = service.queue.show(queue_id)[0]
    service.queue.delete(queue_id)
    return QueueEntryOut.model_validate(entry)


@router.get("/track", tags=["tracking"])
def track(
    service: Service,
    ref: Annotated[
        str, Query(min_length=1, max_length=1024, description="Message-ID or queue id.")
    ],
) -> list[TrackEventOut]:
    """Every event of one message at this server: received, queued, delivered, relayed..."""
    return [TrackEventOut.model_validate(e) for e in service.queue.track(ref)]


@router.get("/track/search", tags=["tracking"])
def track_search(
    service: Service,
    sender: Annotated[str, Query(max_length=1024, description="Envelope sender.")] = "",
    recipient: Annotated[str, Query(max_length=1024, description="Recipient address.")] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TrackEventOut]:
    """The latest events of mail from a sender and/or to a recipient, newest first."""
    events = service.queue.search(sender=sender, recipient=recipient, limit=limit)
    return [TrackEventOut.model_validate(e) for e in events]


@router.post("/track/ask", tags=["tracking"])
def track_ask(service: Service, wake: Wake, body: TrackAskIn) -> TrackAskOut:
    """Ask every other site this site can address and verify for its events of one message
    (a signed track-query through the queue); read the answers with `GET /api/track/path`."""
    asked = service.tracking.ask_sites(body.ref)
    if asked.asked:
        wake()
    return TrackAskOut.model_validate(asked)


@router.get("/track/path", tags=["tracking"])
def track_path(
    service: Service,
    message_id: Annotated[
        str,
        Query(min_length=1, max_length=998, description="Message-ID (or a queue id here)."),
    ],
    token: Annotated[
        str,
        Query(max_length=32, description="A query's token (default: the latest for the message)."),
    ] = "",
) -> MessagePathOut:
    """One message's path across sites: the merged timeline of this site's events and each
    answered site's, and the sites that answered the query or have not yet."""
    return MessagePathOut.model_validate(service.tracking.path(message_id, token))


@router.get("/doctor", tags=["doctor"])
def doctor(
    service: Service,
    wake: Wake,
    site: Annotated[str | None, Query(max_length=256, description="Only this site.")] = None,
    timeout: Annotated[
        float,
        Query(
            ge=ROUND_TRIP_MIN,
            le=ROUND_TRIP_MAX,
            description="Seconds to wait for each round trip.",
        ),
    ] = ROUND_TRIP_DEFAULT,
) -> list[FindingOut]:
    """DNS, every site's IMS, connectors, replication, routing and a round trip of mail to
    each site, each finding ok / warning / error with its fix."""
    findings = run_doctor(service, site=site, round_trip_timeout=timeout, wake=wake)
    return [FindingOut.model_validate(f) for f in findings]
