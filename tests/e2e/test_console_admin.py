"""The console for an admin's day (issue 22), in headless Chromium against a lab of its own
(127.37.93.0/24, so it never meets test_console.py's lab): a Message-ID search opens the
message's path at once, and a site that is down is drawn red in the topology, not amber.
The second test stops SiteC; the lab is this module's alone."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect
from tests.e2e.browser import Screenshot, require_chromium
from tests.support.lab import RunningLab, running_lab

require_chromium()

pytestmark = pytest.mark.timeout(600)  # the first test also waits for `lab up` (1-3 minutes)

NET = "127.37.93"
RED = "rgb(198, 40, 40)"  # console.css --error


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    """This module's own lab (it stops one of its sites)."""
    with running_lab(tmp_path_factory.mktemp("admin-lab") / "lab", NET) as running:
        yield running


def test_message_id_search_opens_the_path_directly(
    lab: RunningLab, console: Page, screenshot: Screenshot
) -> None:
    """A Message-ID typed in Message Tracking lands on that message's path, no list between;
    a sender search still lists what it found."""
    message_id = lab.send_from_outside("user2@example.com", "Straight to the path")
    assert lab.delivered("SiteB", message_id), f"{message_id} not delivered at SiteB"
    console.goto("/console/tracking")
    console.locator("#tracking-search input[name=ref]").fill(message_id)
    console.locator("#tracking-search button[type=submit]").click()
    expect(console).to_have_url(
        re.compile(r"/console/tracking/path\?ref=" + re.escape(quote(message_id, safe="")))
    )
    expect(console.locator("main h1")).to_have_text("Path of a message")
    expect(console.locator(".timeline li[data-site=SiteA][data-event=received]")).to_have_count(1)
    screenshot(console, "admin-01-message-id-opens-path")
    console.goto("/console/tracking")
    console.locator("#tracking-search input[name=sender]").fill("someone@outside.example")
    console.locator("#tracking-search button[type=submit]").click()
    expect(console.locator(f'.tracking-results tr[data-message-id="{message_id}"]')).to_have_count(
        1
    )


def test_a_site_that_is_down_is_red_in_the_topology(
    lab: RunningLab, console: Page, screenshot: Screenshot
) -> None:
    """SiteC is stopped and SiteA has mail for it that found nobody answering: SiteC's node
    and SiteA's connected-site link to it are red (error), SiteB stays green."""
    pid = json.loads((lab.root / "lab.json").read_text())["pids"]["SiteC"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 40
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    lab.send_from_outside("user3@example.com", "For a site that is down")
    console.goto("/console/")
    node = console.locator("#topology g.node[data-site=SiteC]")
    expect(node).to_have_attribute("data-health", "error", timeout=60_000)  # refreshed every 5 s
    link = console.locator(
        "#topology g.link[data-kind=connected-site][data-from=SiteA][data-to=SiteC]"
    )
    expect(link).to_have_attribute("data-health", "error")
    expect(console.locator("#topology table.links")).to_contain_text("the site does not answer")
    stroke = node.locator("circle").evaluate("c => getComputedStyle(c).stroke")
    assert stroke == RED
    expect(console.locator("#topology g.node[data-site=SiteB]")).to_have_attribute(
        "data-health", "ok"
    )
    screenshot(console, "admin-02-site-down-red")
