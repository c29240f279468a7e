"""`sitemail track`: one message's path, at this site or across the organisation's sites.

One job: parse and render for `AdminService.queue.track` (this site's tracking log) and,
with `--all-sites`, `AdminService.tracking` (ask every other site, wait for the answers,
show the merged timeline); registered on the main app by `cli.py`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from sitemail.admin.cli import DataDir, JsonFlag, _when, admin, app, emit_json, handle_errors, out
from sitemail.admin.datadir import resolve_data_dir
from sitemail.admin.service import AdminService
from sitemail.admin.tracking import MessagePath, TrackAsked
from sitemail.admin.wake import poke
from sitemail.core.errors import UsageError
from sitemail.queue.records import TrackEvent

__all__ = ["track_cmd"]

DEFAULT_WAIT = 10.0  # seconds: a round trip between running sites takes one or two
POLL = 0.2  # seconds between looks at the database (the server stores the answers)


@app.command("track")
@handle_errors
def track_cmd(
    ref: Annotated[str, typer.Argument(help="Message-ID or queue id.")],
    all_sites: Annotated[
        bool,
        typer.Option(
            "--all-sites",
            help="Also ask every other site (signed, through the queue) for its events and "
            "show the merged path with a site column.",
        ),
    ] = False,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait",
            min=0,
            max=600,
            help=f"With --all-sites: seconds to wait for the answers (default {DEFAULT_WAIT:g}).",
        ),
    ] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Follow one message: received, queued, delivered, deferred, relayed, bounced; with
    --all-sites, at every site of the organisation that answers."""
    if wait is not None and not all_sites:
        raise UsageError("--wait goes with --all-sites")
    if all_sites:
        _track_all_sites(ref, DEFAULT_WAIT if wait is None else wait, data_dir, as_json)
        return
    with admin(data_dir) as service:
        events = service.queue.track(ref)
    if as_json:
        emit_json([_event_json(e) for e in events])
        return
    for e in events:
        _print_event(e)


def _event_json(e: TrackEvent) -> dict[str, Any]:
    return {**e.fields(), "at": _when(e.at)}


def _print_event(e: TrackEvent) -> None:
    out.print(
        f"{_when(e.at)}  {e.site:8} {e.queue_id}  {e.event:9} {e.recipient}  {e.detail}",
        markup=False,
    )


def _track_all_sites(ref: str, wait: float, data_dir: DataDir, as_json: bool) -> None:
    where = resolve_data_dir(data_dir)
    with admin(where) as service:
        asked = service.tracking.ask_sites(ref)
        # Without a running server the queries only wait in the queue: do not wait for them.
        running = poke(where) if asked.asked else True
        path = _wait_for_answers(service, asked, wait if running else 0.0)
    if as_json:
        emit_json(_path_json(asked, path))
        return
    for e in path.events:
        _print_event(e)
    if not path.events:
        out.print(f"no tracking events for {path.message_id} here or at a site that answered")
    _print_sites(asked, path, wait, running)


def _wait_for_answers(service: AdminService, asked: TrackAsked, timeout: float) -> MessagePath:
    deadline = time.monotonic() + timeout
    path = service.tracking.path(asked.message_id, asked.token)
    while path.pending and time.monotonic() < deadline:
        time.sleep(POLL)
        path = service.tracking.path(asked.message_id, asked.token)
    return path


def _print_sites(asked: TrackAsked, path: MessagePath, wait: float, running: bool) -> None:
    if not asked.asked:
        out.print(f"no other site to ask: the events of {path.local_site} only")
    for site in path.sites:
        if site.answered:
            cut = f" (its latest {site.events} only)" if site.truncated else ""
            out.print(f"{site.site} answered: {site.events} event(s){cut}", markup=False)
    if path.pending and not running:
        out.print(
            "no server runs for this data dir: the queries wait in its queue until "
            f"`sitemail serve` sends them; not answered: {', '.join(path.pending)}",
            markup=False,
        )
    elif path.pending:
        whose = "its server" if len(path.pending) == 1 else "each one's server"
        out.print(
            f"no answer within {wait:g} s from {', '.join(path.pending)}: is {whose} "
            "running and mail flowing both ways? (sitemail doctor)",
            markup=False,
        )
    for skipped in asked.skipped:
        out.print(f"not asked: {skipped.site} ({skipped.reason})", markup=False)


def _path_json(asked: TrackAsked, path: MessagePath) -> dict[str, Any]:
    return {
        "message_id": path.message_id,
        "token": asked.token,
        "local_site": path.local_site,
        "asked": list(asked.asked),
        "skipped": [{"site": s.site, "reason": s.reason} for s in asked.skipped],
        "answered": list(path.answered),
        "pending": list(path.pending),
        "events": [_event_json(e) for e in path.events],
    }
