"""The console's login, the organisation (with its picture), sites, servers with their Internet
Mail Service property pages, and the Knowledge Consistency Check.

One job: these pages and their actions; each action calls AdminService as the CLI does, then
redirects to a page that shows the result (a flash line says what happened).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Form as FormField
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from sitemail.core.errors import NotFoundError, SitemailError
from sitemail.directory.ims_objects import DEFAULT_COST
from sitemail.replication.kcc import SiteInfo
from sitemail.web.console import views
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
from sitemail.web.console.session import SESSION_COOKIE, SESSION_SECONDS, new_session
from sitemail.web.deps import ApiContext, ThrottledError, client_address

__all__ = ["router"]

router = APIRouter(prefix=PREFIX)

IMS_TABS = ("general", "connected-sites", "domain-routes", "domains")


def _safe_next(target: str) -> str:
    """Only a path of the console itself: never an open redirect to another site."""
    if target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX + "/"


@router.get("/login", include_in_schema=False)
def login_page(request: Request, next: str = "") -> HTMLResponse:
    return templates.TemplateResponse(
        request, "console/login.html", {"next": _safe_next(next), "error": ""}
    )


@router.post("/login", include_in_schema=False)
async def login(
    request: Request,
    token: Annotated[str, FormField(max_length=200)] = "",
    next: Annotated[str, FormField(max_length=2000)] = "",
) -> Response:
    """A coroutine: a flood of wrong tokens waits on the loop (deps.ApiContext.wrong_token),
    not in the threads the API's routes need."""
    api: ApiContext = request.app.state.context
    if not api.token_matches(token.strip()):
        try:
            await api.wrong_token(client_address(request))
            status, text = 401, "That is not this site's admin token."
        except ThrottledError:
            status, text = 429, "Too many wrong tokens from your address: try again later."
        return templates.TemplateResponse(
            request,
            "console/login.html",
            {"next": _safe_next(next), "error": text},
            status_code=status,
        )
    session = new_session(api.token, api.now())
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session.cookie,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout", include_in_schema=False)
def logout(request: Request, _form: Form) -> Response:
    response = RedirectResponse(PREFIX + "/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- the organisation -----------------------------------------------------------------------


@router.get("/", include_in_schema=False)
def organization(console: Console) -> HTMLResponse:
    picture = views.topology(console.service, console.now())
    return render(console, "console/org.html", topology=picture)


@router.get("/topology", include_in_schema=False)
def topology_fragment(console: Console) -> HTMLResponse:
    """The picture alone: the organisation page refreshes it every few seconds."""
    picture = views.topology(console.service, console.now())
    return templates.TemplateResponse(
        console.request, "console/_topology.html", {"topology": picture}
    )


def _site(tree: views.Tree, name: str) -> SiteInfo:
    for site in tree.sites:
        if site.name == name:
            return site
    raise NotFoundError(f"no site {name!r} in the directory here")


@router.get("/sites/{name}", include_in_schema=False)
def site_page(console: Console, name: str) -> HTMLResponse:
    tree = views.tree(console.service)
    site = _site(tree, name)
    service = console.service
    connected = [
        c for c in service.routing.list_connected_sites(every_site=True) if c.owner == name
    ]
    return render(
        console,
        "console/site.html",
        tree=tree,
        site=site,
        addressing=service.addressing() if site.is_local else "",
        connected=connected,
        domains=[d for d in service.routing.list_domains(every_site=True) if d.owner == name],
    )


@router.get("/servers/{name}", include_in_schema=False)
def server_page(console: Console, name: str, tab: str = "general") -> HTMLResponse:
    service = console.service
    tree = views.tree(service)
    site = next((s for s in tree.sites if name in s.servers), None)
    if site is None:
        raise NotFoundError(f"no server {name!r} in the directory here")
    every = service.routing.list_connected_sites(every_site=True)
    return render(
        console,
        "console/server.html",
        server=name,
        site=site,
        tab=tab if tab in IMS_TABS else "general",
        tabs=IMS_TABS,
        connected=[c for c in every if c.owner == site.name],
        routes=service.list_domain_routes() if site.is_local else [],
        domains=[d for d in service.routing.list_domains(every_site=True) if d.owner == site.name],
        config=console.api.config if site.is_local else None,
        default_cost=DEFAULT_COST,
        known_sites=[s.name for s in tree.sites if not s.is_local],
        tree=tree,
    )


def _server_tab(console: ConsoleContext, tab: str) -> str:
    return f"/servers/{console.service.org().local_server}?tab={tab}"


def _done(console: ConsoleContext, path: str, message: str) -> Response:
    return flash(redirect(path, console.request), "ok", message)


def _failed(console: ConsoleContext, path: str, exc: SitemailError) -> Response:
    return flash(redirect(path, console.request), "error", exc.message)


@router.post("/ims/connected-sites", include_in_schema=False)
def add_connected_site(console: Console, form: Form) -> Response:
    back = _server_tab(console, "connected-sites")
    try:
        cost = int(form.get("cost") or DEFAULT_COST)
    except ValueError:
        return flash(redirect(back, console.request), "error", "the cost is a number, 1 to 100")
    try:
        entry = console.service.routing.add_connected_site(
            form.get("site", "").strip(),
            form.get("routing_address", ""),
            cost,
            form.get("tls_fingerprint", "").strip(),
        )
    except SitemailError as exc:
        return _failed(console, back, exc)
    note = "" if entry.known else f" ({entry.site} is not in the directory yet: see the KCC)"
    return _done(
        console, back, f"connected site {entry.site} added: @{entry.routing_address}{note}"
    )


@router.post("/ims/connected-sites/{site}/edit", include_in_schema=False)
def edit_connected_site(console: Console, form: Form, site: str) -> Response:
    back = _server_tab(console, "connected-sites")
    try:
        cost = int(form["cost"]) if form.get("cost") else None
    except ValueError:
        return flash(redirect(back, console.request), "error", "the cost is a number, 1 to 100")
    try:
        entry = console.service.routing.update_connected_site(
            site,
            routing_address=form.get("routing_address") or None,
            cost=cost,
            tls_fingerprint=form.get("tls_fingerprint", "").strip(),
        )
    except SitemailError as exc:
        return _failed(console, back, exc)
    pin = ", TLS pinned" if entry.tls_fingerprint else ""
    return _done(
        console,
        back,
        f"connected site {entry.site} changed: @{entry.routing_address}, cost {entry.cost}{pin}",
    )


@router.post("/ims/connected-sites/{site}/remove", include_in_schema=False)
def remove_connected_site(console: Console, _form: Form, site: str) -> Response:
    back = _server_tab(console, "connected-sites")
    try:
        entry = console.service.routing.remove_connected_site(site)
    except SitemailError as exc:
        return _failed(console, back, exc)
    return _done(console, back, f"connected site {entry.site} removed")


@router.post("/ims/domain-routes", include_in_schema=False)
def add_domain_route(console: Console, form: Form) -> Response:
    back = _server_tab(console, "domain-routes")
    try:
        entry = console.service.add_domain_route(form.get("domain", ""), form.get("host", ""))
    except SitemailError as exc:
        return _failed(console, back, exc)
    return _done(console, back, f"mail for {entry.domain} now goes to {entry.host}")


@router.post("/ims/domain-routes/{domain}/remove", include_in_schema=False)
def remove_domain_route(console: Console, _form: Form, domain: str) -> Response:
    back = _server_tab(console, "domain-routes")
    try:
        entry = console.service.remove_domain_route(domain)
    except SitemailError as exc:
        return _failed(console, back, exc)
    return _done(console, back, f"domain route for {entry.domain} removed")


@router.post("/ims/domains", include_in_schema=False)
def add_domain(console: Console, form: Form) -> Response:
    back = _server_tab(console, "domains")
    try:
        entry = console.service.routing.add_domain(
            form.get("domain", ""),
            internal_relay=form.get("internal_relay") == "on",
            forward_unresolved=form.get("forward_unresolved", "").strip(),
        )
    except SitemailError as exc:
        return _failed(console, back, exc)
    return _done(console, back, f"domain {entry.domain} added ({entry.type})")


@router.post("/ims/domains/{domain}/remove", include_in_schema=False)
def remove_domain(console: Console, _form: Form, domain: str) -> Response:
    back = _server_tab(console, "domains")
    try:
        entry = console.service.routing.remove_domain(domain)
    except SitemailError as exc:
        return _failed(console, back, exc)
    return _done(console, back, f"domain {entry.domain} removed")


# -- the Knowledge Consistency Check ---------------------------------------------------------


@router.get("/kcc", include_in_schema=False)
def kcc_page(console: Console) -> HTMLResponse:
    return render(console, "console/kcc.html", report=None)


@router.post("/kcc/check-now", include_in_schema=False)
def kcc_check_now(console: Console, _form: Form) -> HTMLResponse:
    """Check Now: the report is the answer (nothing to redirect to: it is not stored)."""
    report = console.service.replication.kcc()
    return render(console, "console/kcc.html", report=report, checked_at=console.now())
