"""The web console: the Exchange Administrator's tree and property pages in a browser.

Server-rendered Jinja2 pages with htmx (vendored in `web/static/`, no front-end build) over the
same AdminService as the CLI and the API. A browser logs in once with the admin token and gets
a session cookie; every form carries the session's CSRF token (`session.py`). Pages:
the organisation with its picture, sites, servers (the IMS property pages), Directory
Replication, Site Addressing, the KCC, recipients, queues, message tracking and the doctor.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from sitemail.web.console import (
    pages_doctor,
    pages_org,
    pages_queue,
    pages_recipients,
    pages_replication,
)
from sitemail.web.console.common import PREFIX, TEMPLATES, CsrfError, LoginRequiredError, templates

__all__ = ["PREFIX", "error_page", "mount_console"]

STATIC = TEMPLATES.parent / "static"

# No inline script, no outside origin: the pages only ever run htmx from this server.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


HSTS = "max-age=31536000"  # served over TLS: browsers keep to https for a year


class _SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        if request.url.scheme == "https":
            response.headers["Strict-Transport-Security"] = HSTS
            # Every cookie (session, flash, deletions) only over TLS; changed in place, as
            # `response.headers` writes through to this same list.
            response.raw_headers[:] = [
                (k, v + b"; Secure" if k == b"set-cookie" and b"secure" not in v.lower() else v)
                for k, v in response.raw_headers
            ]
        # Every answer, the API's and the redirect at / included: none may be framed or
        # sniffed, and none is cached but the console's static files.
        for name, value in SECURITY_HEADERS.items():
            if name == "Cache-Control" and request.url.path.startswith(PREFIX + "/static"):
                continue
            response.headers.setdefault(name, value)
        return response


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """A fault on a console page, as a page (the API answers JSON for the same faults)."""
    return templates.TemplateResponse(
        request, "console/error.html", {"status": status, "message": message}, status_code=status
    )


def mount_console(app: FastAPI) -> None:
    """Serve the console under /console (and send / there)."""
    app.mount(PREFIX + "/static", StaticFiles(directory=str(STATIC)), name="console-static")
    for module in (pages_org, pages_recipients, pages_replication, pages_queue, pages_doctor):
        app.include_router(module.router)
    app.add_middleware(_SecurityHeaders)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/", status_code=307)

    @app.exception_handler(LoginRequiredError)
    async def login_required(request: Request, _exc: LoginRequiredError) -> Response:
        target = f"{PREFIX}/login?next={request.url.path}"
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    @app.exception_handler(CsrfError)
    async def csrf_refused(request: Request, _exc: CsrfError) -> Response:
        return error_page(
            request,
            403,
            "This form did not come from this console's page (its CSRF token is missing or "
            "stale): reload the page and try again.",
        )
