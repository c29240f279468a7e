"""What every console page and action shares: the templates, the login check, the CSRF check,
flash messages, and how a page is rendered.

One job: the plumbing between Starlette and the console's templates; no page lives here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from sitemail.admin.service import AdminService
from sitemail.web.console import views
from sitemail.web.console.session import SESSION_COOKIE, Session, check_csrf, read_session
from sitemail.web.deps import ApiContext

__all__ = [
    "PREFIX",
    "Console",
    "ConsoleContext",
    "CsrfError",
    "Form",
    "LoginRequiredError",
    "checked_form",
    "flash",
    "redirect",
    "render",
    "templates",
]

PREFIX = "/console"
FLASH_COOKIE = "sitemail_flash"
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

templates = Jinja2Templates(directory=str(TEMPLATES))
templates.env.globals["prefix"] = PREFIX
templates.env.filters["when"] = lambda t: (
    "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(t)))
)
templates.env.filters["when_ms"] = lambda t: (
    "" if t is None else templates.env.filters["when"](t) + f".{int(float(t) * 1000) % 1000:03d}"
)
templates.env.filters["ago"] = lambda s: "" if s is None else f"{float(s):.0f} s"


class LoginRequiredError(Exception):
    """No valid session: the browser is sent to the login page."""


class CsrfError(Exception):
    """A form posted without this session's CSRF token (or from another origin): 403."""


class ConsoleContext:
    """One request of a logged-in browser: its session, an AdminService, the clock."""

    def __init__(self, request: Request, api: ApiContext, session: Session) -> None:
        self.request = request
        self.api = api
        self.session = session
        self.service: AdminService = api.service()

    def now(self) -> float:
        return self.api.clock.now() if self.api.clock is not None else time.time()


def _api(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


def _console(request: Request) -> ConsoleContext:
    api = _api(request)
    now = api.clock.now() if api.clock is not None else time.time()
    session = read_session(api.token, request.cookies.get(SESSION_COOKIE), now)
    if session is None:
        raise LoginRequiredError
    return ConsoleContext(request, api, session)


Console = Annotated[ConsoleContext, Depends(_console)]


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_parts(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of `netloc` under `scheme`, the port made explicit; None if bad."""
    try:
        parsed = urlsplit(f"{scheme}://{netloc}")
        port = parsed.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return None
    if parsed.hostname is None or parsed.path or parsed.query:
        return None
    return scheme, parsed.hostname.lower(), port


def _same_origin(request: Request) -> bool:
    """A browser names the page a form came from in Origin; it must be ours: the same scheme
    (https when the console is served over TLS), host and port as this request. (No Origin at
    all is an old browser or a script: the CSRF token still has to match.)"""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    scheme, _, netloc = origin.partition("://")
    given = _origin_parts(scheme.lower(), netloc)
    ours = _origin_parts(request.url.scheme, request.headers.get("host", ""))
    return given is not None and given == ours


async def checked_form(request: Request, console: Console) -> dict[str, str]:
    """The posted form's fields, once its CSRF token and origin are checked."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    presented = request.headers.get("x-csrf-token") or fields.get("csrf")
    if not _same_origin(request) or not check_csrf(console.session, presented):
        raise CsrfError
    return fields


Form = Annotated[dict[str, str], Depends(checked_form)]


def redirect(path: str, request: Request) -> Response:
    """After a POST: see the result with a GET (and htmx follows it as a full page)."""
    target = PREFIX + path
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Location": target})
    return RedirectResponse(target, status_code=303)


def flash(response: Response, kind: str, message: str) -> Response:
    """Show one line on the next page (ok or error), like the Administrator's message box."""
    response.set_cookie(
        FLASH_COOKIE,
        quote(f"{kind}|{message[:600]}"),
        max_age=60,
        path=PREFIX,
        httponly=True,
        samesite="strict",
    )
    return response


def _take_flash(request: Request) -> tuple[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    kind, _, message = unquote(raw).partition("|")
    return (kind if kind in ("ok", "error") else "ok", message)


def render(
    console: ConsoleContext, page: str, /, status_code: int = 200, **values: Any
) -> HTMLResponse:
    """A whole page: the tree on the left, the template `page` on the right."""
    request = console.request
    message = _take_flash(request)
    tree = values.pop("tree", None) or views.tree(console.service)  # a page may have read it
    response = templates.TemplateResponse(
        request,
        page,
        {
            "tree": tree,
            "csrf": console.session.csrf,
            "flash": message,
            "path": request.url.path,
            **values,
        },
        status_code=status_code,
    )
    if message is not None:
        response.delete_cookie(FLASH_COOKIE, path=PREFIX)
    return response
