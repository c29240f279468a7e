"""The console's Directory Replication container: connectors (add, remove, Request Now with
"new and modified" or "refresh all"), the status of every exchange, and pending partners.

One job: these pages and actions over `AdminService.replication`; after a change that queued
a replication message the server is woken, as the CLI and the API do.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from sitemail.core.errors import SitemailError
from sitemail.replication.connectors import DEFAULT_SCHEDULE
from sitemail.replication.keys import shown_fingerprint
from sitemail.web.console.common import (
    PREFIX,
    Console,
    ConsoleContext,
    Form,
    flash,
    redirect,
    render,
)

__all__ = ["router"]

router = APIRouter(prefix=PREFIX)

BACK = "/replication"


def _back(console: ConsoleContext, kind: str, message: str) -> Response:
    return flash(redirect(BACK, console.request), kind, message)


@router.get("/replication", include_in_schema=False)
def replication_page(console: Console) -> HTMLResponse:
    replication = console.service.replication
    status = replication.status()
    return render(
        console,
        "console/replication.html",
        connectors=replication.list_connectors(),
        status=status,
        peers={p.peer: p for p in status.peers},
        fingerprint=shown_fingerprint,
        site_key=console.service.site_key(),
        default_schedule=DEFAULT_SCHEDULE,
        now=console.now(),
    )


@router.post("/replication/connectors", include_in_schema=False)
def add_connector(console: Console, form: Form) -> Response:
    try:
        connector = console.service.replication.add_connector(
            form.get("site", "").strip(),
            bridgehead=form.get("bridgehead", "").strip(),
            routing_address=form.get("routing_address", ""),
            peer_key=form.get("peer_key", "").strip(),
            schedule=form.get("schedule", "").strip() or DEFAULT_SCHEDULE,
        )
    except SitemailError as exc:
        return _back(console, "error", exc.message)
    console.api.wake()
    return _back(
        console,
        "ok",
        f"replication connector to {connector.site} added; it requests the directory now",
    )


@router.post("/replication/connectors/{site}/edit", include_in_schema=False)
def edit_connector(console: Console, form: Form, site: str) -> Response:
    try:
        connector = console.service.replication.update_connector(
            site,
            bridgehead=form.get("bridgehead", "").strip() or None,
            routing_address=form.get("routing_address") or None,
            schedule=form.get("schedule", "").strip() or None,
        )
    except SitemailError as exc:
        return _back(console, "error", exc.message)
    console.api.wake()
    return _back(
        console,
        "ok",
        f"replication connector to {connector.site} changed: bridgehead "
        f"{connector.bridgehead}, @{connector.routing_address}, schedule {connector.schedule}",
    )


@router.post("/replication/connectors/{site}/remove", include_in_schema=False)
def remove_connector(console: Console, _form: Form, site: str) -> Response:
    try:
        connector = console.service.replication.remove_connector(site)
    except SitemailError as exc:
        return _back(console, "error", exc.message)
    return _back(console, "ok", f"replication connector to {connector.site} removed")


@router.post("/replication/{site}/request-now", include_in_schema=False)
def request_now(console: Console, form: Form, site: str) -> Response:
    """Request Now: "new and modified" (the default) or "refresh all" from USN 0."""
    refresh_all = form.get("mode") == "refresh-all"
    try:
        outcome = console.service.replication.request_now(site, refresh_all=refresh_all)
    except SitemailError as exc:
        return _back(console, "error", exc.message)
    console.api.wake()
    what = "everything (refresh all)" if refresh_all else "new and modified items"
    if outcome.sent:
        return _back(console, "ok", f"requested {what} from {site} (request {outcome.seq})")
    return _back(console, "ok", f"{site}: {outcome.detail}")


@router.post("/replication/pending/{site}/accept", include_in_schema=False)
def accept_pending(console: Console, form: Form, site: str) -> Response:
    try:
        connector = console.service.replication.accept_pending(
            site,
            schedule=form.get("schedule", "").strip() or DEFAULT_SCHEDULE,
            fingerprint=form.get("fingerprint", "").strip(),
        )
    except SitemailError as exc:
        return _back(console, "error", exc.message)
    console.api.wake()
    return _back(console, "ok", f"{connector.site} accepted: a connector now answers it")


@router.post("/replication/pending/{site}/reject", include_in_schema=False)
def reject_pending(console: Console, _form: Form, site: str) -> Response:
    try:
        console.service.replication.reject_pending(site)
    except SitemailError as exc:
        return _back(console, "error", exc.message)
    return _back(console, "ok", f"{site}'s requests stay unanswered")
