"""The demo site: what `make lab` runs until the three-site lab exists.

One job: make (or reuse) one site's data dir with a few mailboxes, a contact and a group, then
move Site Addressing to the company domain with "update all recipients", the article's last
section, through the same AdminService the CLI uses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sitemail.admin.service import AdminService
from sitemail.config import CONFIG_FILE
from sitemail.core.errors import ConflictError
from sitemail.directory import ObjectKind

__all__ = ["DEMO_MAILBOXES", "run_demo"]

DEMO_MAILBOXES = (
    ("user1", "User One", "User", "One"),
    ("jsmith", "John Smith", "John", "Smith"),
    ("mjones", "Mary Jones", "Mary", "Jones"),
)


def run_demo(data_dir: Path, say: Callable[[str], None]) -> AdminService:
    if (data_dir / CONFIG_FILE).exists():
        say(f"reusing the demo site in {data_dir}")
        service = AdminService.open(data_dir)
    else:
        say(f"Creating SiteA/ServerA of ExchangeORG in {data_dir} (site domain sitea.example.com)")
        service = AdminService.init(
            data_dir,
            org="ExchangeORG",
            site="SiteA",
            server="ServerA",
            domain="sitea.example.com",
            listen=["127.10.10.10"],
        )
    for alias, name, given, surname in DEMO_MAILBOXES:
        try:
            r = service.add_recipient(
                ObjectKind.MAILBOX, alias, display_name=name, given_name=given, surname=surname
            )
            say(f"  mailbox {alias}: {r.primary_smtp}")
        except ConflictError:
            pass  # already there from an earlier run
    try:
        service.add_recipient(
            ObjectKind.CONTACT, "partner", display_name="Partner", target="partner@example.net"
        )
        service.add_recipient(
            ObjectKind.GROUP,
            "everyone",
            display_name="Everyone",
            members=[a for a, *_ in DEMO_MAILBOXES],
        )
    except ConflictError:
        pass
    say("Setting up a single e-mail domain: Site Addressing -> @example.com, update all recipients")
    result = service.set_addressing("smtp", "@example.com", update_recipients=True)
    say(
        f"  {result.old_template} -> {result.new_template}: {result.updated} recipient(s) re-addressed"
    )
    for r in service.list_recipients(None):
        say(f"  {r.kind:8} {r.alias:10} {', '.join(p.address for p in r.proxies)}")
    return service
