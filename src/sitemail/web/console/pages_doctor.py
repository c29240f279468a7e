"""The console's Doctor: `sitemail doctor` in the browser (DNS, every site's IMS, connectors,
replication, routing, and a round trip of mail to each site), each finding with its fix.

One job: this page and its Run action over `admin.doctor.run_doctor`; the server is woken so
that the round trips' pings leave at once, as the CLI and the API do.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from sitemail.admin.doctor import Level, run_doctor
from sitemail.core.errors import SitemailError
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

DEFAULT_TIMEOUT = 30.0  # seconds per round trip, as `sitemail doctor`
MAX_TIMEOUT = 600.0  # as the API's `timeout`


def _sites(console: ConsoleContext) -> list[str]:
    return [s.name for s in console.service.replication.kcc().sites]


@router.get("/doctor", include_in_schema=False)
def doctor_page(console: Console) -> HTMLResponse:
    return render(
        console,
        "console/doctor.html",
        sites=_sites(console),
        findings=None,
        timeout=f"{DEFAULT_TIMEOUT:g}",
    )


@router.post("/doctor/run", include_in_schema=False)
def doctor_run(console: Console, form: Form) -> Response:
    site = form.get("site", "").strip() or None
    try:
        timeout = float(form.get("timeout", "") or DEFAULT_TIMEOUT)
    except ValueError:
        timeout = -1.0
    if not 1 <= timeout <= MAX_TIMEOUT:
        return _back(console, f"the timeout must be a number of seconds from 1 to {MAX_TIMEOUT:g}")
    try:
        findings = run_doctor(
            console.service, site=site, round_trip_timeout=timeout, wake=console.api.wake
        )
    except SitemailError as exc:
        return _back(console, exc.message)
    counts = {level: sum(f.level is level for f in findings) for level in Level}
    return render(
        console,
        "console/doctor.html",
        sites=_sites(console),
        findings=findings,
        counts=counts,
        site=site or "",
        timeout=f"{timeout:g}",
        checked_at=console.now(),
    )


def _back(console: ConsoleContext, message: str) -> Response:
    return flash(redirect("/doctor", console.request), "error", message)
