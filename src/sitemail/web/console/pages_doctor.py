"""The console's Doctor: `sitemail doctor` in the browser (DNS, every site's IMS, connectors,
replication, routing, and a round trip of mail to each site), each finding with its fix.

One job: this page and its Run action over `admin.doctor.run_doctor`; the server is woken so
that the round trips' pings leave at once, as the CLI and the API do.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from sitemail.admin.doctor import (
    ROUND_TRIP_DEFAULT,
    ROUND_TRIP_MAX,
    ROUND_TRIP_MIN,
    Level,
    run_doctor,
)
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


def _sites(console: ConsoleContext) -> list[str]:
    return [s.name for s in console.service.replication.kcc().sites]


@router.get("/doctor", include_in_schema=False)
def doctor_page(console: Console) -> HTMLResponse:
    return render(
        console,
        "console/doctor.html",
        sites=_sites(console),
        findings=None,
        timeout=f"{ROUND_TRIP_DEFAULT:g}",
    )


@router.post("/doctor/run", include_in_schema=False)
def doctor_run(console: Console, form: Form) -> Response:
    site = form.get("site", "").strip() or None
    try:
        timeout = float(form.get("timeout", "") or ROUND_TRIP_DEFAULT)
    except ValueError:
        timeout = -1.0
    if not ROUND_TRIP_MIN <= timeout <= ROUND_TRIP_MAX:
        bounds = f"{ROUND_TRIP_MIN:g} to {ROUND_TRIP_MAX:g}"
        return _back(console, f"the timeout must be a number of seconds from {bounds}")
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
