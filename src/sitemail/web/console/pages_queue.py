"""The console's queues (list, retry, hold, release, delete) and message tracking (search by
Message-ID or queue id, sender or recipient; one message's path as a timeline).

One job: these pages and actions over `AdminService.queue`.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from sitemail.core.errors import NotFoundError, SitemailError
from sitemail.queue.records import TrackEvent
from sitemail.web.console.common import (
    PREFIX,
    Console,
    ConsoleContext,
    Form,
    flash,
    redirect,
    render,
    templates,
)

__all__ = ["router"]

router = APIRouter(prefix=PREFIX)

SEARCH_LIMIT = 200


def _back(console: ConsoleContext, kind: str, message: str) -> Response:
    return flash(redirect("/queues", console.request), kind, message)


@router.get("/queues", include_in_schema=False)
def queues_page(console: Console) -> HTMLResponse:
    entries = console.service.queue.entries()
    waiting = [e for e in entries if any(r.state == "queued" for r in e.recipients)]
    shape = console.service.queue.shape()  # by destination, like `sitemail queue shape`
    return render(console, "console/queues.html", entries=waiting, shape=shape, now=console.now())


@router.post("/queues/retry", include_in_schema=False)
def retry_all(console: Console, _form: Form) -> Response:
    count = console.service.queue.retry(None)
    console.api.wake()
    return _back(console, "ok", f"{count} recipients due now")


@router.post("/queues/{queue_id}/{action}", include_in_schema=False)
def queue_action(console: Console, _form: Form, queue_id: str, action: str) -> Response:
    queue = console.service.queue
    try:
        if action == "retry":
            count = queue.retry(queue_id)
            console.api.wake()
            return _back(console, "ok", f"{queue_id}: {count} recipients due now")
        if action in ("hold", "release"):
            queue.set_held(queue_id, action == "hold")
            if action == "release":
                console.api.wake()
            return _back(console, "ok", f"{queue_id} {'held' if action == 'hold' else 'released'}")
        if action == "delete":
            queue.delete(queue_id)
            return _back(console, "ok", f"{queue_id} deleted (no DSN is sent)")
    except SitemailError as exc:
        return _back(console, "error", exc.message)
    raise NotFoundError(f"no queue action {action!r}: retry, hold, release or delete")


# -- message tracking ------------------------------------------------------------------------


def _messages(events: list[TrackEvent]) -> list[TrackEvent]:
    """One line per message (its newest event) for the search results."""
    seen: dict[str, TrackEvent] = {}
    for event in events:
        seen.setdefault(event.message_id or event.queue_id, event)
    return list(seen.values())


@router.get("/tracking", include_in_schema=False)
def tracking_page(
    console: Console,
    ref: Annotated[str, Query(max_length=1024)] = "",
    sender: Annotated[str, Query(max_length=1024)] = "",
    recipient: Annotated[str, Query(max_length=1024)] = "",
) -> Response:
    queue = console.service.queue
    results: list[TrackEvent] = []
    error = ""
    try:
        if ref.strip():
            results = _messages(queue.track(ref))
            if len(results) == 1:  # one message: its path is what the admin came for
                found = results[0].message_id or results[0].queue_id
                return redirect(f"/tracking/path?ref={quote(found)}", console.request)
        elif sender.strip() or recipient.strip():
            results = _messages(
                queue.search(sender=sender, recipient=recipient, limit=SEARCH_LIMIT)
            )
    except SitemailError as exc:
        error = exc.message
    return render(
        console,
        "console/tracking.html",
        ref=ref,
        sender=sender,
        recipient=recipient,
        results=results,
        searched=bool(ref.strip() or sender.strip() or recipient.strip()),
        error=error,
        recent=[] if ref or sender or recipient else queue.recent(limit=20),
    )


ASK_WAIT = 60.0  # seconds the path page keeps looking for answers after asking


def _sites_in_order(events: tuple[TrackEvent, ...]) -> list[str]:
    """The sites of a path in the order the message reached them."""
    order: list[str] = []
    for event in events:
        if event.site and event.site not in order:
            order.append(event.site)
    return order


@router.get("/tracking/path", include_in_schema=False)
def tracking_path(
    console: Console,
    ref: Annotated[str, Query(min_length=1, max_length=1024)],
    token: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    """One message's path: this site's events and those of every site that answered, in
    time order. While asked sites have not answered, the page looks again every second."""
    path = console.service.tracking.path(ref, token)
    waiting = bool(path.pending) and (
        path.asked_at is not None and console.now() - path.asked_at < ASK_WAIT
    )
    values: dict[str, Any] = {
        "ref": ref,
        "path": path,
        "order": _sites_in_order(path.events),
        "waiting": waiting,
    }
    if console.request.headers.get("hx-target") == "path":
        return templates.TemplateResponse(console.request, "console/_path.html", values)
    return render(console, "console/path.html", **values)


@router.post("/tracking/ask", include_in_schema=False)
def tracking_ask(console: Console, form: Form) -> Response:
    """Follow across sites: ask every site this one can verify for its events of the
    message (signed replication mail); the path page shows the answers as they come."""
    ref = form.get("ref", "")
    back = f"/tracking/path?ref={quote(ref)}"
    try:
        asked = console.service.tracking.ask_sites(ref)
    except SitemailError as exc:
        return flash(redirect(back, console.request), "error", exc.message)
    console.api.wake()
    note = f"asked {', '.join(asked.asked)}" if asked.asked else "no other site can be asked"
    if asked.skipped:
        note += "; not asked: " + "; ".join(f"{s.site} ({s.reason})" for s in asked.skipped)
    return flash(
        redirect(f"/tracking/path?ref={quote(ref)}&token={quote(asked.token)}", console.request),
        "ok",
        note,
    )
