"""The console's Recipients container (every site's, one page at a time), a recipient's
property pages, and Site Addressing with its dry-run diff before "update all recipients".

One job: these pages and actions over AdminService. Recipients owned by another site are
replicas: shown with their owner, never editable here (the owner's console changes them).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from sitemail.core.errors import SitemailError
from sitemail.directory import ObjectKind, Recipient, RecipientChanges
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

PAGE = 50
DIFF_SHOWN = 200  # rows of the dry-run diff on the page; the count says how many in all
KINDS = {"mailbox": ObjectKind.MAILBOX, "contact": ObjectKind.CONTACT, "group": ObjectKind.GROUP}


def _lines(text: str) -> list[str]:
    """A textarea's addresses or members: one per line, or separated by commas."""
    return [part.strip() for part in text.replace(",", "\n").splitlines() if part.strip()]


@router.get("/recipients", include_in_schema=False)
def recipients_page(
    console: Console,
    site: Annotated[str, Query(max_length=256)] = "",
    q: Annotated[str, Query(max_length=256)] = "",
    kind: Annotated[str, Query(max_length=16)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    found, total = console.service.page_recipients(
        KINDS.get(kind), site=site or None, text=q, offset=(page - 1) * PAGE, limit=PAGE
    )
    values: dict[str, Any] = {
        "rows": found,
        "total": total,
        "page": page,
        "pages": max(1, -(-total // PAGE)),
        "site": site,
        "q": q,
        "kind": kind if kind in KINDS else "",
        "local_site": console.service.directory.local_site,
    }
    if console.request.headers.get("hx-target") == "recipient-rows":
        # The search box asks for the rows alone as one types.
        return templates.TemplateResponse(console.request, "console/_recipient_rows.html", values)
    return render(console, "console/recipients.html", **values)


def _recipient_values(console: ConsoleContext, r: Recipient) -> dict[str, Any]:
    service = console.service
    members = service.members(r) if r.kind is ObjectKind.GROUP else []
    return {
        "r": r,
        "members": members,
        "read_only": r.site != service.directory.local_site,
    }


@router.get("/recipients/{ref}", include_in_schema=False)
def recipient_page(console: Console, ref: str, tab: str = "general") -> HTMLResponse:
    r = console.service.get_recipient(ref)
    return render(console, "console/recipient.html", tab=tab, **_recipient_values(console, r))


@router.post("/recipients", include_in_schema=False)
def add_recipient(console: Console, form: Form) -> Response:
    kind = KINDS.get(form.get("kind", ""))
    if kind is None:
        return flash(redirect("/recipients", console.request), "error", "choose a kind")
    try:
        r = console.service.add_recipient(
            kind,
            form.get("alias", "").strip(),
            display_name=form.get("display_name", "").strip(),
            given_name=form.get("given_name", "").strip(),
            surname=form.get("surname", "").strip(),
            target=form.get("target", "").strip(),
            members=_lines(form.get("members", "")),
            extra_addresses=_lines(form.get("addresses", "")),
            password=form.get("password") or None,
        )
    except SitemailError as exc:
        return flash(redirect("/recipients", console.request), "error", exc.message)
    return flash(
        redirect(f"/recipients/{r.guid}", console.request),
        "ok",
        f"{kind} {r.alias} added: {r.primary_smtp}",
    )


@router.post("/recipients/{ref}", include_in_schema=False)
def edit_recipient(console: Console, form: Form, ref: str) -> Response:
    """The General and E-mail Addresses pages' Apply: fields left empty stay as they are."""
    back = f"/recipients/{ref}?tab={form.get('tab', 'general')}"
    changes = RecipientChanges(
        display_name=form.get("display_name") or None,
        given_name=form.get("given_name"),
        surname=form.get("surname"),
        target=form.get("target") or None,
        add_addresses=_lines(form.get("add_addresses", "")),
        remove_addresses=_lines(form.get("remove_addresses", "")),
        primary_address=form.get("primary_address") or None,
    )
    service = console.service
    try:
        r = service.update_recipient(ref, changes, password=form.get("password") or None)
        add, remove = _lines(form.get("add_members", "")), _lines(form.get("remove_members", ""))
        if add or remove:
            r = service.set_members(r.guid, add, remove)
    except SitemailError as exc:
        return flash(redirect(back, console.request), "error", exc.message)
    return flash(redirect(back, console.request), "ok", f"{r.alias} saved")


@router.post("/recipients/{ref}/remove", include_in_schema=False)
def remove_recipient(console: Console, _form: Form, ref: str) -> Response:
    try:
        r = console.service.remove_recipient(ref)
    except SitemailError as exc:
        return flash(redirect(f"/recipients/{ref}", console.request), "error", exc.message)
    return flash(
        redirect("/recipients", console.request),
        "ok",
        f"{r.kind} {r.alias} removed (the deletion replicates to every site)",
    )


# -- Site Addressing --------------------------------------------------------------------------


@router.get("/addressing", include_in_schema=False)
def addressing_page(console: Console) -> HTMLResponse:
    return render(
        console, "console/addressing.html", current=console.service.addressing(), plan=None
    )


@router.post("/addressing/preview", include_in_schema=False)
def addressing_preview(console: Console, form: Form) -> Response:
    """The dry run: every recipient's old and new primary address, before anything changes."""
    template = form.get("smtp", "").strip()
    drop_old = form.get("drop_old") == "on"
    try:
        result = console.service.set_addressing(
            "smtp", template, update_recipients=True, drop_old=drop_old, dry_run=True
        )
    except SitemailError as exc:
        return flash(redirect("/addressing", console.request), "error", exc.message)
    plan = result.plan
    changed = plan.changed if plan is not None else []
    return render(
        console,
        "console/addressing.html",
        current=result.old_template,
        template=result.new_template,
        drop_old=drop_old,
        plan=plan,
        changes=changed[:DIFF_SHOWN],
        changed=len(changed),
        collisions=plan.collisions if plan is not None else [],
    )


@router.post("/addressing/apply", include_in_schema=False)
def addressing_apply(console: Console, form: Form) -> Response:
    """ "Update all recipients": what the preview showed, now for real."""
    update = form.get("update_recipients") == "on"
    try:
        result = console.service.set_addressing(
            "smtp",
            form.get("smtp", "").strip(),
            update_recipients=update,
            drop_old=update and form.get("drop_old") == "on",
        )
    except SitemailError as exc:
        return flash(redirect("/addressing", console.request), "error", exc.message)
    what = f"; {result.updated} recipients re-addressed" if update else " (recipients unchanged)"
    return flash(
        redirect("/addressing", console.request),
        "ok",
        f"Site Addressing is now {result.new_template}{what}",
    )
