"""What the console's end-to-end tests share besides fixtures: the browser's set-up, logging in,
and where screenshots go."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

NET = "127.10.93"
CHROMIUM = Path("/usr/bin/chromium")
# This machine's closed network (and CI's containers) need these: no sandbox for root, no GPU,
# and nothing that calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 15_000  # every wait of the browser: a page, an element, a text
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SITEMAIL_TEST_ARTIFACTS") or REPO / "test-artifacts") / "console"

Screenshot = Callable[[Page, str], Path]


def require_chromium() -> None:
    """Skip the calling test module when Debian's chromium is missing and cannot be installed
    here (root installs it with scripts/test-deps.sh)."""
    if not CHROMIUM.exists() and os.geteuid() != 0:
        pytest.skip(
            f"{CHROMIUM} (Debian's chromium) is missing and only root can install it: "
            "run scripts/test-deps.sh as root",
            allow_module_level=True,
        )


class PageErrors:
    """What went wrong inside the page (a script error, a CSP refusal, a page or file that
    failed to load): none is expected. Refusals (401, 403) are what some tests look for: they
    check those answers themselves."""

    REFUSED = re.compile(r"^Failed to load resource: .* status of 40[13] ")

    def __init__(self) -> None:
        self.seen: list[str] = []

    def console(self, message: ConsoleMessage) -> None:
        url = message.location.get("url", "")
        if message.type != "error" or self.REFUSED.match(message.text):
            return
        if url.endswith("/favicon.ico"):  # the browser asks on its own; the console has none
            return
        self.seen.append(f"{message.text} ({url})")

    def page_error(self, error: Exception) -> None:
        self.seen.append(str(error))


def open_page(browser: Browser, base_url: str) -> tuple[Page, PageErrors]:
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    context.set_default_navigation_timeout(WAIT_MS)
    page = context.new_page()
    errors = PageErrors()
    page.on("console", errors.console)
    page.on("pageerror", errors.page_error)
    page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm: "Remove ...?" -> OK
    return page, errors


def log_in(page: Page, token: str) -> None:
    """The console sends a browser without a session to its login page; the token lets it in."""
    page.goto("/console/")
    expect(page).to_have_url(re.compile(r"/console/login\?next=/console/$"))
    page.fill("input[name=token]", token)
    page.click("main form button[type=submit]")
    expect(page.locator("main h1")).to_have_text("Organisation ExchangeORG")
