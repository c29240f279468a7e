"""The web console end to end (issue 8's acceptance): the article's steps done in SiteA's
console in headless Chromium against a running lab, each one checked by something the console
does not say itself (the CLI's view of the same data dir, or mail flowing), then a message
from outside found in tracking with its path. Screenshots of the main pages are saved
(see conftest.py for where).

The lab has already walked the whole article by CLI, so the steps here undo a part first
(SiteA's connected site and domain route for SiteC) or add something new (a mailbox at SiteB
for Request Now to pull, an unknown site for the KCC to name, a template for Site Addressing,
restored afterwards). The tests run in file order on one lab; each leaves it working as it
found it, even when it fails.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page, expect
from tests.e2e.browser import NET, Screenshot, log_in, open_page, require_chromium
from tests.support.lab import RunningLab

require_chromium()

pytestmark = pytest.mark.timeout(600)  # the first test also waits for `lab up` (1-3 minutes)

SETTLE = 60.0  # seconds for what the lab does on its own: replication, delivery


def eventually(check: Callable[[], Any], what: str, limit: float = SETTLE) -> Any:
    """`check()`'s first true answer within `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit:.0f} s: {what}")
        time.sleep(0.5)


def settled(page: Page) -> None:
    """Until htmx has settled what it swapped in: it wires new content's triggers (the
    search-as-you-type box, confirmations) 20 ms after the swap, so typing at once is lost."""
    expect(page.locator(".htmx-swapping, .htmx-settling, .htmx-added")).to_have_count(0)


def flash_ok(page: Page, text: str) -> None:
    """The line the console shows after an action (a stale one from before does not match)."""
    expect(page.locator("p.flash.ok")).to_contain_text(text)
    settled(page)


def open_tree(page: Page, label: str, heading: str | re.Pattern[str]) -> None:
    """A click in the Administrator's tree on the left, then the contents pane's heading."""
    page.locator("#tree").get_by_role("link", name=label, exact=True).first.click()
    expect(page.locator("main h1")).to_have_text(heading)
    settled(page)


def open_tab(page: Page, label: str) -> None:
    page.locator("nav.tabs").get_by_role("link", name=label).click()
    expect(page.locator("nav.tabs a[aria-current=page]")).to_have_text(label)
    settled(page)


# -- logging in, the organisation --------------------------------------------------------------


def test_console_refuses_a_wrong_token_then_shows_the_organisation_and_its_picture(
    lab: RunningLab, browser: Browser, screenshot: Screenshot
) -> None:
    """Three sites in the table and the picture, with SiteA's links to both others."""
    page, errors = open_page(browser, lab.console_url("SiteA"))
    try:
        page.goto("/console/")
        expect(page).to_have_url(re.compile(r"/console/login"))
        page.fill("input[name=token]", "not-the-token")
        with page.expect_response(lambda r: r.request.method == "POST") as refused:
            page.click("main form button[type=submit]")
        assert refused.value.status == 401
        expect(page.locator("p.flash.error")).to_have_text("That is not this site's admin token.")
        screenshot(page, "01-login-refused")
        log_in(page, lab.token("SiteA"))

        sites = page.locator("#sites tbody tr[data-site]")
        expect(sites).to_have_count(3)
        assert sites.evaluate_all("rows => rows.map(r => r.dataset.site)") == [
            "SiteA",
            "SiteB",
            "SiteC",
        ]
        expect(page.locator("#sites tr[data-site=SiteA]")).to_contain_text("this site")
        nodes = page.locator("#topology svg g.node[data-site]")
        expect(nodes).to_have_count(3)
        for other in ("SiteB", "SiteC"):
            link = page.locator(
                f'#topology g.link[data-kind=connected-site][data-from=SiteA][data-to="{other}"]'
            )
            expect(link).to_have_attribute("data-health", "ok")
        known = {s["name"] for s in lab.json("kcc", "check-now", site="SiteA")["sites"]}
        assert known == {"SiteA", "SiteB", "SiteC"}  # the CLI knows the same three
        screenshot(page, "02-organisation")
        assert errors.seen == [], errors.seen
    finally:
        page.context.close()


# -- the Internet Mail Service's property pages -------------------------------------------------


def test_connected_site_and_domain_route_added_on_the_ims_pages_send_mail_to_site_c_directly(
    lab: RunningLab, console: Page, screenshot: Screenshot
) -> None:
    """SiteA's connected site SiteC and its domain route are removed by CLI (mail for SiteC
    then goes through SiteB); added again in the console, the CLI lists them, routing sends
    SiteC's mail to SiteC's IMS again, and a message from outside goes there directly."""
    hop = f"{lab.address('SiteC')}:{lab.smtp_port}"
    lab.sitemail("connected-site", "remove", "SiteC", site="SiteA")
    lab.sitemail("domain-route", "remove", "sitec.example.com", site="SiteA")
    before = lab.json("route", "explain", "user3@example.com", site="SiteA")
    assert (before["site"], before["nexthop"]) == ("SiteC", "SiteB")  # the long way round

    try:
        open_tree(console, "ServerA", "ServerA")
        open_tab(console, "Connected Sites")
        expect(console.locator("#connected-sites tr[data-site=SiteC]")).to_have_count(0)
        form = console.locator("#add-connected-site")
        form.locator("input[name=site]").fill("SiteC")
        form.locator("input[name=routing_address]").fill("@SiteC.example.com")
        form.locator("button[type=submit]").click()
        flash_ok(console, "connected site SiteC added: @sitec.example.com")
        expect(console.locator("#connected-sites tr[data-site=SiteC]")).to_contain_text(
            "@sitec.example.com"
        )
        screenshot(console, "03-server-connected-sites")

        open_tab(console, "Routing (domain routes)")
        form = console.locator("#add-domain-route")
        form.locator("input[name=domain]").fill("sitec.example.com")
        form.locator("input[name=host]").fill(hop)
        form.locator("button[type=submit]").click()
        flash_ok(console, f"mail for sitec.example.com now goes to {hop}")
        expect(
            console.locator('#domain-routes tr[data-domain="sitec.example.com"]')
        ).to_contain_text(hop)
        screenshot(console, "04-server-domain-routes")
        open_tab(console, "Domains")
        screenshot(console, "05-server-domains")
    finally:  # whatever the console did, SiteA routes to SiteC again as the lab had it
        connected = lab.json("connected-site", "list", site="SiteA")
        routes = lab.json("domain-route", "list", site="SiteA")
        if "SiteC" not in {c["site"] for c in connected}:
            lab.sitemail(
                "connected-site", "add", "SiteC", "--routing-address", "@SiteC.example.com",
                site="SiteA",
            )  # fmt: skip
        if "sitec.example.com" not in {r["domain"] for r in routes}:
            lab.sitemail("domain-route", "add", "sitec.example.com", hop, site="SiteA")
    assert {(c["site"], c["routing_address"], c["owner"]) for c in connected} == {
        ("SiteB", "siteb.example.com", "SiteA"),
        ("SiteC", "sitec.example.com", "SiteA"),
    }
    assert {r["domain"]: r["host"] for r in routes}["sitec.example.com"] == hop
    after = lab.json("route", "explain", "user3@example.com", site="SiteA")
    assert (after["nexthop"], after["site_hop"]["relay"]) == ("SiteC", hop)

    message_id = lab.send_from_outside("user3@example.com", "Via the restored route")
    assert lab.delivered("SiteC", message_id), f"{message_id} not delivered at SiteC"
    relayed = [e for e in lab.track("SiteA", message_id) if e["event"] == "relayed"]
    assert relayed, lab.track("SiteA", message_id)
    assert relayed[0]["detail"].startswith(f"to {lab.address('SiteC')}:"), relayed


# -- the Knowledge Consistency Checker ----------------------------------------------------------


def test_check_now_names_a_connected_site_that_is_no_site_until_it_is_removed(
    lab: RunningLab, console: Page, screenshot: Screenshot
) -> None:
    """An admin's typo (a connected site "SiteX"), added and removed in the console; Check Now
    names it while it is there, as `sitemail kcc check-now` does."""
    open_tree(console, "ServerA", "ServerA")
    open_tab(console, "Connected Sites")
    form = console.locator("#add-connected-site")
    form.locator("input[name=site]").fill("SiteX")
    form.locator("input[name=routing_address]").fill("@sitex.example.com")
    form.locator("button[type=submit]").click()
    try:
        flash_ok(console, "SiteX is not in the directory yet: see the KCC")
        open_tree(console, "Directory Replication (KCC)", "Knowledge Consistency Check")
        console.locator("#check-now button").click()
        expect(console.locator("#kcc-done")).to_contain_text("3 sites")
        warning = console.locator(".warning[data-code=unknown-site]")
        expect(warning).to_contain_text("SiteX")
        expect(console.locator("#kcc-sites li")).to_have_count(3)
        screenshot(console, "06-kcc-warning")
        cli = lab.json("kcc", "check-now", site="SiteA")["warnings"]
        assert [(w["code"], "SiteX" in w["message"]) for w in cli] == [("unknown-site", True)]

        open_tree(console, "ServerA", "ServerA")
        open_tab(console, "Connected Sites")
        console.locator("#connected-sites tr[data-site=SiteX] button.danger").click()  # + OK
        flash_ok(console, "connected site SiteX removed")
    finally:
        connected = {c["site"] for c in lab.json("connected-site", "list", site="SiteA")}
        if "SiteX" in connected:
            lab.sitemail("connected-site", "remove", "SiteX", site="SiteA")
    assert "SiteX" not in connected, "the console did not remove SiteX"
    open_tree(console, "Directory Replication (KCC)", "Knowledge Consistency Check")
    console.locator("#check-now button").click()
    expect(console.locator("#kcc-done")).to_contain_text("0 warnings")
    expect(console.locator(".warning")).to_have_count(0)
    screenshot(console, "07-kcc-consistent")
    assert lab.json("kcc", "check-now", site="SiteA")["warnings"] == []


def test_doctor_in_the_console_finds_the_lab_healthy_as_the_cli_does(
    lab: RunningLab, console: Page, screenshot: Screenshot
) -> None:
    """Doctor, Run: every check of the lab passes, round trips of mail to SiteB and SiteC
    included, and the console lists the same checks with the same results as `sitemail
    doctor --json` run against the same data dir."""
    open_tree(console, "Doctor", "Doctor")
    form = console.locator("#run-doctor")
    form.locator("input[name=timeout]").fill("30")
    form.locator("button[type=submit]").click()
    expect(console.locator("#doctor-done")).to_contain_text(" 0 errors", timeout=120_000)
    rows = console.locator("#findings tbody tr")
    shown = [
        (row.get_attribute("data-check"), row.get_attribute("data-level")) for row in rows.all()
    ]
    assert ("round-trip", "ok") in shown
    round_trips = console.locator("#findings tr[data-check=round-trip]")
    expect(round_trips.filter(has_text="SiteB")).to_have_count(1)
    expect(round_trips.filter(has_text="SiteC")).to_have_count(1)
    screenshot(console, "08-doctor")
    cli = lab.json("doctor", "--timeout", "30", site="SiteA")
    assert [(f["check"], f["level"]) for f in cli] == shown


# -- Directory Replication: Request Now ---------------------------------------------------------


def _peer(lab: RunningLab, site: str, peer: str) -> dict[str, Any]:
    status = lab.json("replication", "status", site=site)
    found: dict[str, Any] = next(p for p in status["peers"] if p["peer"] == peer)
    return found


def _idle_peer(lab: RunningLab, site: str, peer: str) -> dict[str, Any]:
    """The peer's status once no request to it is outstanding (Request Now would wait)."""
    answer: dict[str, Any] = eventually(
        lambda: (p := _peer(lab, site, peer)) and not p["waiting"] and p,
        f"{site}'s request to {peer} answered",
    )
    return answer


def _aliases_at(lab: RunningLab, site: str) -> dict[str, str]:
    """alias -> owning site, of every recipient `site`'s directory holds."""
    return {
        o["name"]: o["site"]
        for o in lab.json("directory", "list", site=site)
        if o["kind"] in ("mailbox", "contact", "group")
    }


def test_request_now_pulls_a_new_mailbox_of_site_b_and_refresh_all_asks_again(
    lab: RunningLab, console: Page, screenshot: Screenshot
) -> None:
    """A mailbox made at SiteB is not at SiteA (the schedule is every 3 hours) until Request Now
    "new and modified" in SiteA's console; then "refresh all" sends one more request, answered."""
    alias = f"newhire{uuid.uuid4().hex[:6]}"
    lab.sitemail("mailbox", "add", alias, "--name", "Nina Newhire", site="SiteB")
    start = _idle_peer(lab, "SiteA", "SiteB")
    assert alias not in _aliases_at(lab, "SiteA")

    open_tree(console, "Directory Replication Connectors", "Directory Replication")
    row = console.locator("#connectors tr[data-site=SiteB]")
    row.locator("button[value=new]").click()
    flash_ok(console, "requested new and modified items from SiteB (request ")
    eventually(
        lambda: _aliases_at(lab, "SiteA").get(alias) == "SiteB", f"{alias} replicated to SiteA"
    )
    pulled = _idle_peer(lab, "SiteA", "SiteB")
    assert pulled["requests_sent"] == start["requests_sent"] + 1
    assert pulled["answers_received"] > start["answers_received"]

    console.locator("#connectors tr[data-site=SiteB] button[value=refresh-all]").click()  # + OK
    flash_ok(console, "requested everything (refresh all) from SiteB (request ")
    refreshed = eventually(
        lambda: (
            (p := _peer(lab, "SiteA", "SiteB"))["answers_received"] > pulled["answers_received"]
            and not p["waiting"]
            and p
        ),
        "SiteB answered the refresh-all request",
    )
    assert refreshed["requests_sent"] == pulled["requests_sent"] + 1

    console.reload()
    expect(console.locator("#connectors tr[data-site=SiteB]")).to_contain_text("objects applied")
    expect(console.locator("#replication-status")).to_contain_text("SiteB")
    screenshot(console, "08-replication")


# -- Site Addressing with its dry run ---------------------------------------------------------


def _own_primaries(lab: RunningLab, site: str) -> dict[str, tuple[str, list[str]]]:
    """alias -> (primary address, every address) of `site`'s own mailboxes, by the CLI."""
    return {
        m["alias"]: (m["primary_address"], m["addresses"])
        for m in lab.json("mailbox", "list", site=site)
        if m["site"] == site
    }


def test_site_addressing_shows_the_dry_run_diff_and_changes_nothing_until_apply(
    lab: RunningLab, console: Page, screenshot: Screenshot
) -> None:
    """SiteA moves to @sitea.example.com: the diff names each mailbox's old and new primary,
    nothing changes until Apply; then the CLI sees the new primaries with the old addresses
    kept. The lab's @example.com is restored afterwards (by CLI)."""
    before = _own_primaries(lab, "SiteA")
    assert {a: p for a, (p, _) in before.items()} == {
        "user1": "user1@example.com",
        "jsmith": "jsmith@example.com",
    }
    open_tree(console, "Site Addressing", "Site Addressing")
    expect(console.locator("#current-template")).to_have_text("%m@example.com")
    console.locator("#addressing-preview input[name=smtp]").fill("@sitea.example.com")
    console.locator("#addressing-preview button[type=submit]").click()
    diff = console.locator("#addressing-diff")
    expect(diff.locator("tbody tr[data-alias]")).to_have_count(len(before))
    for alias, (primary, _) in before.items():
        row = diff.locator(f"tr[data-alias={alias}]")
        expect(row.locator("td.old")).to_have_text(primary)
        expect(row.locator("td.new")).to_have_text(f"{alias}@sitea.example.com")
    expect(console.locator("#addressing-summary")).to_contain_text("Nothing has changed yet.")
    screenshot(console, "09-addressing-diff")
    assert lab.sitemail("addressing", "show", site="SiteA").stdout.split() == [
        "SMTP",
        "%m@example.com",
    ]
    assert _own_primaries(lab, "SiteA") == before  # the dry run changed nothing

    try:
        console.locator("#addressing-apply button[type=submit]").click()
        flash_ok(
            console,
            f"Site Addressing is now %m@sitea.example.com; {len(before)} recipients re-addressed",
        )
        expect(console.locator("#current-template")).to_have_text("%m@sitea.example.com")
        screenshot(console, "10-addressing-applied")
        after = _own_primaries(lab, "SiteA")
        for alias, (primary, _) in before.items():
            new_primary, addresses = after[alias]
            assert new_primary == f"{alias}@sitea.example.com"
            assert primary in addresses  # the old primary is kept: mail to it still arrives
    finally:
        lab.sitemail(
            "addressing", "set", "smtp", "@example.com", "--update-recipients", site="SiteA"
        )
    assert {a: p for a, (p, _) in _own_primaries(lab, "SiteA").items()} == {
        a: p for a, (p, _) in before.items()
    }


# -- recipients, queues ----------------------------------------------------------------------


def test_recipients_search_finds_a_user_of_another_site_as_a_replica(
    lab: RunningLab, console: Page, screenshot: Screenshot
) -> None:
    """Typing in the search box narrows the list as one types (htmx); Mary Jones is SiteB's."""
    mjones = next(m for m in lab.json("mailbox", "list", site="SiteB") if m["alias"] == "mjones")
    open_tree(console, "All recipients", "Recipients")
    console.locator("#recipient-search input[name=q]").fill("Jones")
    rows = console.locator("#recipient-rows tbody tr[data-alias]")
    expect(rows).to_have_count(1)
    row = console.locator("#recipient-rows tr[data-alias=mjones]")
    expect(row).to_contain_text(mjones["primary_address"])
    expect(row).to_contain_text("SiteB")
    expect(row.locator(".badge")).to_have_text("replica")
    expect(console).to_have_url(re.compile(r"[?&]q=Jones"))
    screenshot(console, "11-recipients")
    row.get_by_role("link").click()
    expect(console.locator("main h1")).to_have_text("Mary Jones Properties")
    expect(console.locator("p.readonly")).to_contain_text("belongs to site SiteB")


def test_queues_page_lists_what_the_cli_lists(
    lab: RunningLab, console: Page, screenshot: Screenshot
) -> None:
    before = {e["queue_id"] for e in lab.json("queue", "list", site="SiteA")}
    open_tree(console, "Queues", "Queues")
    table = console.locator("#queue")
    expect(table).to_be_visible()
    shown = set(
        table.locator("tr[data-queue-id]").evaluate_all("r => r.map(x => x.dataset.queueId)")
    )
    after = {e["queue_id"] for e in lab.json("queue", "list", site="SiteA")}
    assert shown <= before | after  # a replication message may pass through meanwhile
    if not before and not after:
        expect(table).to_contain_text("The queue is empty")
    screenshot(console, "12-queues")


DOWN_HOST = "127.36.0.20"  # nothing listens there: mail routed to it waits in the queue


def test_queues_page_shows_the_queue_by_destination(
    lab: RunningLab, console: Page, screenshot: Screenshot
) -> None:
    """Mail for a destination that is down counts under its next hop in the Queues page's
    table by destination, as `sitemail queue shape` counts it."""
    with socket.socket() as probe:
        probe.bind((DOWN_HOST, 0))
        host = f"{DOWN_HOST}:{probe.getsockname()[1]}"
    hop = f"relay {host}"
    lab.sitemail("domain-route", "add", "nowhere.test", host, site="SiteA")
    try:
        for i in range(2):
            lab.send_from_outside(f"user{i}@nowhere.test", "a destination that is down")

        def deferred() -> dict[str, Any] | None:
            rows = lab.json("queue", "shape", site="SiteA")["nexthops"]
            return next((r for r in rows if r["nexthop"] == hop and r["total"] == 2), None)

        cli = eventually(deferred, f"2 recipients deferred at {hop}")
        open_tree(console, "Queues", "Queues")
        row = console.locator(f'#queue-shape tr[data-nexthop="{hop}"]')
        cells = row.locator("td")
        expect(cells.nth(1)).to_have_text(str(cli["total"]))  # T
        expect(cells.nth(2)).to_have_text(str(cli["buckets"]["0-5"]))  # minutes 0-5
        expect(console.locator("#queue-shape tr.total td").nth(0)).to_have_text("TOTAL")
        screenshot(console, "12-queues-by-destination")
    finally:
        for entry in lab.json("queue", "list", site="SiteA"):
            if any(r["address"].endswith("@nowhere.test") for r in entry["recipients"]):
                lab.sitemail("queue", "delete", entry["queue_id"], site="SiteA")
        lab.sitemail("domain-route", "remove", "nowhere.test", site="SiteA")


# -- message tracking ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def message_to_user2(lab: RunningLab) -> str:
    """From outside through the MX (SiteA) to a SiteB user; delivered at SiteB."""
    message_id = lab.send_from_outside("user2@example.com", "Where did I go?")
    assert lab.delivered("SiteB", message_id), f"{message_id} not delivered at SiteB"
    return message_id


def test_tracking_finds_a_message_from_outside_by_recipient_and_shows_its_path(
    lab: RunningLab, console: Page, screenshot: Screenshot, message_to_user2: str
) -> None:
    """SiteA's events for the message (received from outside, relayed to SiteB) as the CLI's
    `sitemail track` lists them."""
    open_tree(console, "Message Tracking", "Message Tracking")
    console.locator("#tracking-search input[name=recipient]").fill("user2@example.com")
    console.locator("#tracking-search button[type=submit]").click()
    found = console.locator(f'.tracking-results tr[data-message-id="{message_to_user2}"]')
    expect(found).to_have_count(1)
    screenshot(console, "13-tracking")
    found.get_by_role("link").click()
    expect(console.locator("main h1")).to_have_text("Path of a message")
    expect(console.locator(".timeline li[data-site=SiteA][data-event=relayed]")).to_contain_text(
        f"to {lab.address('SiteB')}:"
    )
    shown = console.locator(".timeline li[data-site=SiteA]").evaluate_all(
        "items => items.map(i => i.dataset.event)"
    )
    cli = [e["event"] for e in lab.track("SiteA", message_to_user2) if e["site"] == "SiteA"]
    assert shown == cli == ["received", "relayed"]
    screenshot(console, "14-path")


def test_tracking_path_follows_the_message_across_both_sites(
    console: Page, screenshot: Screenshot, message_to_user2: str
) -> None:
    """Follow across sites on SiteA's path page asks the other sites for their events by
    signed replication mail; the page looks again until they answer: SiteA received the
    message first, SiteB delivered it, SiteC (which never saw it) answered with nothing."""
    console.goto(f"/console/tracking/path?ref={quote(message_to_user2)}")
    expect(console.locator(".timeline li[data-site=SiteB]")).to_have_count(0)
    console.locator("#follow-across-sites button").click()
    expect(console.locator("p.flash.ok")).to_contain_text("asked SiteB, SiteC")
    answered = console.locator("#path-answers tr[data-answered=yes]")
    expect(answered).to_have_count(2, timeout=60_000)  # the page asks again every second
    expect(console.locator("#path")).to_have_attribute("data-waiting", "no")
    screenshot(console, "15-path-across-sites")
    events = console.locator(".timeline li[data-site]")
    first = events.first
    expect(first).to_have_attribute("data-site", "SiteA")
    expect(first).to_have_attribute("data-event", "received")
    expect(console.locator(".timeline li[data-site=SiteB][data-event=delivered]")).to_have_count(1)
    expect(console.locator("#path-sites")).to_have_text("SiteA → SiteB")


# -- a page of another origin cannot act ------------------------------------------------------


class _AttackerPage(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def attacker(lab: RunningLab) -> Iterator[Callable[[str, str], str]]:
    """Serve a page with a form that posts a domain route to SiteA's console, from another
    port of SiteA's address (same site, another origin) or from another address (another
    site); returns a function (host, csrf field) -> the page's URL."""
    servers: list[ThreadingHTTPServer] = []

    def serve(host: str, csrf: str) -> str:
        action = f"{lab.console_url('SiteA')}/console/ims/domain-routes"
        field = f'<input name="csrf" value="{csrf}">' if csrf else ""
        page = (
            f"<!doctype html><title>You have won</title><form method=post action='{action}'>"
            "<input name=domain value=evil.example><input name=host value='192.0.2.66:25'>"
            f"{field}<button id=claim>Claim the prize</button></form>"
        )
        handler = type("Page", (_AttackerPage,), {"body": page.encode()})
        server = ThreadingHTTPServer((host, 0), handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://{host}:{server.server_address[1]}/"

    try:
        yield serve
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_a_form_on_another_origin_cannot_change_anything(
    lab: RunningLab, console: Page, screenshot: Screenshot, attacker: Callable[[str, str], str]
) -> None:
    """A logged-in admin's browser opens a hostile page and clicks. From another port of the
    console's own address (the session cookie goes along: same site) the console answers 403,
    even when the page knows this session's CSRF token (the Origin is not the console's); from
    another address the cookie stays home and the browser lands on the login page. The CLI
    shows no new domain route."""
    stolen = console.locator("form input[name=csrf]").first.get_attribute("value") or ""
    assert stolen
    same_site = lab.address("SiteA")
    cases = [(same_site, "", 403), (same_site, stolen, 403), (f"{NET}.30", stolen, 303)]
    for host, csrf, status in cases:
        console.goto(attacker(host, csrf))
        with console.expect_response(lambda r: r.request.method == "POST") as answer:
            console.click("#claim")
        assert answer.value.status == status, (host, bool(csrf))
        cookie = answer.value.request.all_headers().get("cookie", "")
        assert ("sitemail_session=" in cookie) == (host == same_site)  # SameSite=Strict
        if status == 403:
            expect(console.locator("p.flash.error")).to_contain_text("CSRF token")
            if not csrf:
                screenshot(console, "16-csrf-refused")
        else:
            expect(console).to_have_url(re.compile(r"/console/login\?next="))
    routes = lab.json("domain-route", "list", site="SiteA")
    assert "evil.example" not in {r["domain"] for r in routes}
    console.goto("/console/")  # the session itself is unharmed
    expect(console.locator("main h1")).to_have_text("Organisation ExchangeORG")
