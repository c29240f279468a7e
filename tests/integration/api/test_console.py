"""The web console over HTTP: login and session, CSRF, every page, every action checked against
AdminService (the same data dir), faults as pages with the right status, and replicas
read-only, the last over real sockets between two running sites."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.integration.api.conftest import Api, make_site
from tests.support.org import idle, organisation, replicated_pair, until

from sitemail.directory import ObjectKind
from sitemail.queue.attempts import Attempt
from sitemail.web import create_app
from sitemail.web.console.session import SESSION_COOKIE, new_session
from sitemail.web.limits import MAX_BODY

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def login(client: TestClient, token: str) -> str:
    """Log in as a browser does; the CSRF token of the session, read off a page."""
    response = client.post("/console/login", data={"token": token, "next": "/console/"})
    assert response.status_code == 200, response.text
    found = CSRF.search(response.text)
    assert found is not None
    return found.group(1)


def flash_of(response: httpx.Response) -> str:
    found = re.search(r'<p class="flash (ok|error)"[^>]*>([^<]*)</p>', response.text)
    assert found is not None, response.text[:2000]
    return f"{found.group(1)}: {found.group(2)}"


def post(api: Api, path: str, csrf: str, **fields: str) -> httpx.Response:
    """Post a console form and follow the redirect to the page that shows the result."""
    return api.client.post(path, data={"csrf": csrf, **fields})


# -- login, session, headers ---------------------------------------------------------------------


def test_console_needs_a_login_and_sends_the_browser_there(api: Api) -> None:
    response = api.client.get("/console/recipients", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=/console/recipients"
    # htmx asks for a fragment: it is told to go to the login page instead
    htmx = api.client.get("/console/topology", headers={"HX-Request": "true"})
    assert htmx.status_code == 204
    assert htmx.headers["HX-Redirect"].startswith("/console/login")
    assert api.client.get("/", follow_redirects=False).headers["location"] == "/console/"


def test_console_login_refuses_a_wrong_token_and_sets_a_strict_cookie(api: Api) -> None:
    wrong = api.client.post("/console/login", data={"token": "guess"}, follow_redirects=False)
    assert wrong.status_code == 401
    assert "That is not this site" in wrong.text
    assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
    right = api.client.post(
        "/console/login",
        data={"token": api.token, "next": "/console/queues"},
        follow_redirects=False,
    )
    assert right.status_code == 303
    assert right.headers["location"] == "/console/queues"
    cookie = right.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie


@pytest.mark.parametrize("target", ["https://evil.test/", "//evil.test/x", "/api/sites", "/\\x"])
def test_console_login_never_redirects_off_the_console(api: Api, target: str) -> None:
    response = api.client.post(
        "/console/login", data={"token": api.token, "next": target}, follow_redirects=False
    )
    assert response.headers["location"] == "/console/"


def test_console_logout_and_foreign_sessions(api: Api) -> None:
    csrf = login(api.client, api.token)
    assert api.client.get("/console/", follow_redirects=False).status_code == 200
    out = api.client.post("/console/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert api.client.get("/console/", follow_redirects=False).status_code == 303
    # a session made with another key (an old token) is no session here
    stale = new_session("an-old-token", 1.0e12 / 1000)
    api.client.cookies.set(SESSION_COOKIE, stale.cookie)
    assert api.client.get("/console/", follow_redirects=False).status_code == 303


def test_console_session_is_not_an_api_credential_and_the_token_is_not_a_session(
    api: Api,
) -> None:
    login(api.client, api.token)
    assert api.client.get("/api/sites").status_code == 401  # the cookie alone
    api.client.cookies.clear()
    bearer = api.client.get("/console/", headers=api.auth, follow_redirects=False)
    assert bearer.status_code == 303


def test_console_pages_carry_security_headers(api: Api) -> None:
    login(api.client, api.token)
    page = api.client.get("/console/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    script = api.client.get("/console/static/htmx.min.js")
    assert script.status_code == 200
    assert "htmx" in script.text[:2000]
    assert api.client.get("/console/static/../app.py").status_code == 404


# -- CSRF ------------------------------------------------------------------------------------------


def test_console_forms_without_the_sessions_csrf_token_change_nothing(api: Api) -> None:
    csrf = login(api.client, api.token)
    fields = {"site": "SiteB", "routing_address": "@siteb.example.com"}
    attempts = [
        api.client.post("/console/ims/connected-sites", data=fields),
        api.client.post("/console/ims/connected-sites", data={**fields, "csrf": "x" + csrf}),
        api.client.post(
            "/console/ims/connected-sites",
            data={**fields, "csrf": csrf},
            headers={"Origin": "http://evil.test"},
        ),
        api.client.post(
            "/console/ims/connected-sites",
            data={**fields, "csrf": csrf},
            headers={"Origin": "null"},
        ),
    ]
    for response in attempts:
        assert response.status_code == 403
        assert "CSRF" in response.text
    assert api.service.routing.list_connected_sites() == []
    # the same form from our own page works, the token in the form or in htmx's header
    ok = api.client.post(
        "/console/ims/connected-sites",
        data=fields,
        headers={"X-CSRF-Token": csrf, "Origin": "http://testserver"},
    )
    assert ok.status_code == 200
    assert [c.site for c in api.service.routing.list_connected_sites()] == ["SiteB"]


# -- pages ---------------------------------------------------------------------------------------

PAGES = {
    "/console/": "Organisation ExchangeORG",
    "/console/topology": "<svg",
    "/console/sites/SiteA": "Site SiteA Properties",
    "/console/servers/ServerA": "SMTP listens on",
    "/console/servers/ServerA?tab=connected-sites": "New connected site",
    "/console/servers/ServerA?tab=domain-routes": "New domain route",
    "/console/servers/ServerA?tab=domains": "New domain",
    "/console/replication": "New Directory Replication Connector",
    "/console/kcc": "Check Now",
    "/console/addressing": "@sitea.example.com",
    "/console/recipients": "New recipient at SiteA",
    "/console/queues": "The queue is empty",
    "/console/tracking": "Latest deliveries here",
    "/console/doctor": 'id="run-doctor"',
}


def test_console_every_page_renders(api: Api) -> None:
    login(api.client, api.token)
    for path, text in PAGES.items():
        response = api.client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert text in response.text, path


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/console/sites/Nowhere", 404),
        ("/console/servers/Nobody", 404),
        ("/console/recipients/nobody", 404),
        ("/console/tracking/path?ref=%3Cno-such%40x%3E", 404),
        ("/console/tracking/path", 422),
        ("/console/recipients?page=0", 422),
        ("/console/recipients?q=" + "x" * 300, 422),
        ("/console/no-such-page", 404),
    ],
)
def test_console_faults_are_pages_with_their_status(api: Api, path: str, status: int) -> None:
    login(api.client, api.token)
    response = api.client.get(path)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert "Traceback" not in response.text
    assert f"<h1>{status}</h1>" in response.text


# -- actions -------------------------------------------------------------------------------------


def test_console_ims_connected_sites_domain_routes_and_domains(api: Api) -> None:
    csrf = login(api.client, api.token)
    added = post(
        api,
        "/console/ims/connected-sites",
        csrf,
        site="SiteB",
        routing_address="@SiteB.example.com",
        cost="5",
    )
    assert "ok: connected site SiteB added: @siteb.example.com" in flash_of(added)
    assert 'data-site="SiteB"' in added.text
    [entry] = api.service.routing.list_connected_sites()
    assert (entry.site, entry.routing_address, entry.cost) == ("SiteB", "siteb.example.com", 5)
    # the flash is shown once
    assert '<p class="flash' not in api.client.get("/console/servers/ServerA").text

    bad = post(
        api, "/console/ims/connected-sites", csrf, site="SiteC", routing_address="x", cost="lots"
    )
    assert flash_of(bad).startswith("error: the cost is a number")
    bad = post(api, "/console/ims/connected-sites", csrf, site="SiteC", routing_address="@@")
    assert flash_of(bad).startswith("error: bad routing address")

    routed = post(
        api, "/console/ims/domain-routes", csrf, domain="siteb.example.com", host="127.10.75.11"
    )
    assert "mail for siteb.example.com now goes to 127.10.75.11" in flash_of(routed)
    assert [r.domain for r in api.service.list_domain_routes()] == ["siteb.example.com"]
    exact = post(api, "/console/ims/domain-routes", csrf, domain="#only.test", host="127.0.0.9")
    assert flash_of(exact).startswith("ok:")
    removed = post(api, "/console/ims/domain-routes/%23only.test/remove", csrf)
    assert flash_of(removed) == "ok: domain route for #only.test removed"

    relay = post(
        api,
        "/console/ims/domains",
        csrf,
        domain="shared.test",
        internal_relay="on",
        forward_unresolved="127.10.75.50:25",
    )
    assert flash_of(relay) == "ok: domain shared.test added (internal_relay)"
    [domain] = [d for d in api.service.routing.list_domains() if d.domain == "shared.test"]
    assert domain.forward_unresolved == "127.10.75.50:25"

    edited = post(api, "/console/ims/connected-sites/SiteB/edit", csrf,
                  routing_address="@b2.example.com", cost="9", tls_fingerprint="")  # fmt: skip
    assert flash_of(edited) == "ok: connected site SiteB changed: @b2.example.com, cost 9"
    [entry] = api.service.routing.list_connected_sites()
    assert (entry.routing_address, entry.cost) == ("b2.example.com", 9)
    bad = post(api, "/console/ims/connected-sites/SiteB/edit", csrf, cost="0")
    assert flash_of(bad).startswith("error: cost must be between 1 and 100")

    gone = post(api, "/console/ims/connected-sites/SiteB/remove", csrf)
    assert flash_of(gone) == "ok: connected site SiteB removed"
    assert api.service.routing.list_connected_sites() == []
    missing = post(api, "/console/ims/connected-sites/SiteB/remove", csrf)
    assert flash_of(missing).startswith("error:")


def test_console_replication_connector_request_now_and_check_now(api: Api) -> None:
    csrf = login(api.client, api.token)
    key = api.peer.site_key()[0]
    added = post(
        api,
        "/console/replication/connectors",
        csrf,
        site="SiteB",
        bridgehead="ServerB",
        routing_address="siteb.example.com",
        peer_key=key,
        schedule="never",
    )
    assert flash_of(added).startswith("ok: replication connector to SiteB added")
    assert api.wakes  # the server is told at once
    [connector] = api.service.replication.list_connectors()
    assert (connector.site, connector.peer_key) == ("SiteB", key)

    edited = post(api, "/console/replication/connectors/SiteB/edit", csrf,
                  bridgehead="ServerB", routing_address="siteb.example.com", schedule="always")  # fmt: skip
    assert flash_of(edited).startswith("ok: replication connector to SiteB changed")
    [connector] = api.service.replication.list_connectors()
    assert (connector.schedule, connector.peer_key) == ("always", key)
    bad = post(api, "/console/replication/connectors/SiteB/edit", csrf, schedule="often")
    assert flash_of(bad).startswith("error:")

    api.wakes.clear()
    pulled = post(api, "/console/replication/SiteB/request-now", csrf, mode="new")
    assert flash_of(pulled).startswith("ok: requested new and modified items from SiteB")
    assert api.wakes
    [queued] = api.service.queue.entries()
    assert queued.recipients[0].address.lower().endswith("@siteb.example.com")
    again = post(api, "/console/replication/SiteB/request-now", csrf, mode="refresh-all")
    assert flash_of(again).startswith("ok: requested everything (refresh all) from SiteB")
    unknown = post(api, "/console/replication/SiteX/request-now", csrf)
    assert flash_of(unknown).startswith("error: no replication connector to SiteX")

    bad_key = post(
        api,
        "/console/replication/connectors",
        csrf,
        site="SiteC",
        bridgehead="ServerC",
        routing_address="sitec.example.com",
        peer_key="ed25519:nonsense",
    )
    assert flash_of(bad_key).startswith("error:")
    assert len(api.service.replication.list_connectors()) == 1

    checked = post(api, "/console/kcc/check-now", csrf)
    assert checked.status_code == 200
    assert 'id="kcc-done"' in checked.text
    # SiteB's configuration has not replicated (no server runs): the KCC says so, with the fix
    warnings = re.findall(
        r'<div class="warning" data-code="([a-z-]+)"><b>[a-z-]+</b>: ([^<]*)<', checked.text
    )
    assert any("SiteB" in text for _code, text in warnings), warnings


def test_console_doctor_runs_and_shows_each_finding_with_its_fix(api: Api) -> None:
    """The doctor as `sitemail doctor` runs it: no server runs here, so the IMS check and the
    round trip are errors, each with the fix the CLI names; bad input is a message."""
    csrf = login(api.client, api.token)
    page = api.client.get("/console/doctor")
    assert '<option value="SiteA">SiteA</option>' in page.text
    assert api.client.post("/console/doctor/run", data={"timeout": "1"}).status_code == 403
    ran = post(api, "/console/doctor/run", csrf, site="SiteA", timeout="1")
    assert ran.status_code == 200
    rows = re.findall(
        r'<tr data-level="(ok|warning|error)" data-check="([a-z-]+)">\s*<td>[^<]*</td>\s*'
        r"<td>.*?</td>\s*<td>([^<]*)</td>\s*<td>(?:<code>([^<]*)</code>)?</td>",
        ran.text,
        re.DOTALL,
    )
    found = {check: (level, message, fix) for level, check, message, fix in rows}
    assert found["ims"][0] == "error"
    assert "does not answer" in found["ims"][1]
    assert "sitemail serve" in found["ims"][2]
    assert found["round-trip"][0] == "error"
    assert api.wakes  # the server is told to send the pings at once
    levels = [level for level, *_ in rows]
    counts = ", ".join(
        f"{levels.count(level)} {name}"
        for level, name in (("ok", "ok"), ("warning", "warnings"), ("error", "errors"))
    )
    assert f"UTC: {counts}." in ran.text
    assert '<option value="SiteA" selected>' in ran.text
    unknown = post(api, "/console/doctor/run", csrf, site="Nowhere", timeout="1")
    assert flash_of(unknown) == "error: no site &#39;Nowhere&#39; is known here (known: SiteA)"
    for bad in ("0", "601", "soon"):
        refused = post(api, "/console/doctor/run", csrf, timeout=bad)
        assert flash_of(refused) == (
            "error: the timeout must be a number of seconds from 1 to 600"
        ), bad


def test_console_recipients_add_find_edit_remove(api: Api) -> None:
    csrf = login(api.client, api.token)
    added = post(
        api,
        "/console/recipients",
        csrf,
        kind="mailbox",
        alias="jsmith",
        display_name="John Smith",
        given_name="John",
        surname="Smith",
        password="correct horse battery",
    )
    assert flash_of(added) == "ok: mailbox jsmith added: jsmith@sitea.example.com"
    r = api.service.get_recipient("jsmith")
    assert r.display_name == "John Smith"
    post(api, "/console/recipients", csrf, kind="contact", alias="partner",
         display_name="Partner", target="partner@example.net")  # fmt: skip
    post(api, "/console/recipients", csrf, kind="group", alias="staff",
         display_name="Staff", members="jsmith, partner")  # fmt: skip
    assert {m.alias for m in api.service.members(api.service.get_recipient("staff"))} == {
        "jsmith",
        "partner",
    }
    duplicate = post(api, "/console/recipients", csrf, kind="mailbox", alias="jsmith",
                     display_name="Again")  # fmt: skip
    assert flash_of(duplicate).startswith("error:")
    no_kind = post(api, "/console/recipients", csrf, kind="robot", alias="r2", display_name="R")
    assert flash_of(no_kind) == "error: choose a kind"

    found = api.client.get(
        "/console/recipients", params={"q": "john"}, headers={"HX-Target": "recipient-rows"}
    )
    assert found.text.startswith('<div id="recipient-rows">')  # the rows alone, for htmx
    assert 'data-alias="jsmith"' in found.text
    assert "staff" not in found.text
    by_address = api.client.get("/console/recipients", params={"q": "partner@sitea"})
    assert 'data-alias="partner"' in by_address.text
    assert "1 recipient matching" in by_address.text
    groups = api.client.get("/console/recipients", params={"kind": "group"})
    assert 'data-alias="staff"' in groups.text
    assert 'data-alias="jsmith"' not in groups.text
    literal = api.client.get("/console/recipients", params={"q": "%"})
    assert "0 recipients" in literal.text  # a wildcard is a character here

    page = api.client.get(f"/console/recipients/{r.guid}?tab=addresses")
    assert "jsmith@sitea.example.com" in page.text
    assert "Read-only" not in page.text
    edited = post(api, f"/console/recipients/{r.guid}", csrf, tab="general",
                  display_name="Johnny Smith", given_name="John", surname="Smith")  # fmt: skip
    assert flash_of(edited) == "ok: jsmith saved"
    extra = post(api, f"/console/recipients/{r.guid}", csrf, tab="addresses",
                 add_addresses="js@sitea.example.com")  # fmt: skip
    assert flash_of(extra) == "ok: jsmith saved"
    again = api.service.get_recipient("jsmith")
    assert again.display_name == "Johnny Smith"
    assert "js@sitea.example.com" in [p.address for p in again.proxies]

    removed = post(api, f"/console/recipients/{r.guid}/remove", csrf)
    assert flash_of(removed).startswith("ok: mailbox jsmith removed")
    assert api.client.get(f"/console/recipients/{r.guid}").status_code == 404


def test_console_site_addressing_shows_the_diff_then_applies_it(api: Api) -> None:
    csrf = login(api.client, api.token)
    for alias in ("alice", "bob"):
        api.service.add_recipient(ObjectKind.MAILBOX, alias, display_name=alias.title())
    before = api.service.addressing()
    preview = post(api, "/console/addressing/preview", csrf, smtp="@example.com")
    assert preview.status_code == 200
    assert "2 recipients get a new primary address" in preview.text
    diff = preview.text[preview.text.index('id="addressing-diff"') :]
    assert '<td class="old">alice@sitea.example.com</td>' in diff
    assert '<td class="new">alice@example.com</td>' in diff
    # the dry run changed nothing
    assert api.service.addressing() == before
    assert api.service.get_recipient("alice").primary_smtp == "alice@sitea.example.com"

    bad = post(api, "/console/addressing/preview", csrf, smtp="not a template")
    assert flash_of(bad).startswith("error:")

    applied = post(
        api, "/console/addressing/apply", csrf, smtp="@example.com", update_recipients="on"
    )
    assert flash_of(applied) == (
        "ok: Site Addressing is now %m@example.com; 2 recipients re-addressed"
    )
    alice = api.service.get_recipient("alice")
    assert alice.primary_smtp == "alice@example.com"
    assert "alice@sitea.example.com" in [p.address for p in alice.proxies]  # old kept


def test_console_queue_actions_and_tracking(api: Api) -> None:
    csrf = login(api.client, api.token)
    api.service.replication.add_connector(
        "SiteB",
        bridgehead="ServerB",
        routing_address="siteb.example.com",
        peer_key=api.peer.site_key()[0],
        schedule="never",
    )
    api.service.replication.request_now("SiteB")
    [entry] = api.service.queue.entries()
    qid = entry.queue_id
    page = api.client.get("/console/queues")
    assert f'data-queue-id="{qid}"' in page.text

    held = post(api, f"/console/queues/{qid}/hold", csrf)
    assert flash_of(held) == f"ok: {qid} held"
    assert api.service.queue.entries()[0].held
    released = post(api, f"/console/queues/{qid}/release", csrf)
    assert flash_of(released) == f"ok: {qid} released"
    retried = post(api, f"/console/queues/{qid}/retry", csrf)
    assert flash_of(retried) == f"ok: {qid}: 1 recipients due now"
    assert flash_of(post(api, "/console/queues/retry", csrf)) == "ok: 1 recipients due now"
    assert post(api, f"/console/queues/{qid}/explode", csrf).status_code == 404
    assert flash_of(post(api, "/console/queues/NOSUCHID/hold", csrf)).startswith("error:")

    search = api.client.get("/console/tracking", params={"recipient": entry.recipients[0].address})
    assert "Messages found" in search.text
    assert entry.message_id.strip("<>") in search.text
    by_id = api.client.get(
        "/console/tracking", params={"ref": entry.message_id}, follow_redirects=False
    )
    assert by_id.status_code == 303  # one message: its path at once, no list between
    assert by_id.headers["location"].startswith("/console/tracking/path?ref=")
    path = api.client.get("/console/tracking/path", params={"ref": qid})
    assert path.status_code == 200
    assert 'data-event="received"' in path.text
    assert 'data-event="held"' in path.text
    nothing = api.client.get("/console/tracking", params={"sender": "nobody@x.test"})
    assert "Nothing found." in nothing.text

    deleted = post(api, f"/console/queues/{qid}/delete", csrf)
    assert flash_of(deleted) == f"ok: {qid} deleted (no DSN is sent)"
    assert api.service.queue.entries() == []


def test_console_queues_page_says_what_an_attempt_in_progress_does(tmp_path: Path) -> None:
    """The server's attempts in flight (given to the app in-process) show on the Queues page
    beside the recipient they carry, and in the API's queue list."""
    service = make_site(tmp_path, "SiteA", "127.10.75.10")
    peer = make_site(tmp_path, "SiteB", "127.10.75.11")
    try:
        service.replication.add_connector(
            "SiteB",
            bridgehead="ServerB",
            routing_address="siteb.example.com",
            peer_key=peer.site_key()[0],
            schedule="never",
        )
        service.replication.request_now("SiteB")
        [entry] = service.queue.entries()
        address = entry.recipients[0].address
        now = service.clock.now()
        attempt = Attempt(entry.queue_id, (address,), "site SiteB", now - 9, "connecting to b", now)
        app = create_app(tmp_path / "SiteA", wake=lambda: None, attempts=lambda: [attempt])
        with TestClient(app, raise_server_exceptions=False) as client:
            login(client, service.admin_token())
            page = client.get("/console/queues")
            listed = client.get(
                "/api/queue", headers={"Authorization": f"Bearer {service.admin_token()}"}
            ).json()
    finally:
        service.close()
        peer.close()
    assert re.search(r'class="detail doing">now: connecting to b since [^<]+</span>', page.text)
    assert listed[0]["recipients"][0]["doing"] == "connecting to b"
    assert listed[0]["recipients"][0]["doing_since"] == now


def test_console_topology_colours_this_sites_links(api: Api) -> None:
    """SiteA's connected site to SiteB is green while no mail waits; its connector to SiteB,
    whose request waits unanswered (no server runs), is drawn from SiteB to SiteA."""
    csrf = login(api.client, api.token)
    api.service.routing.add_connected_site("SiteB", "siteb.example.com")
    post(api, "/console/replication/connectors", csrf, site="SiteB", bridgehead="ServerB",
         routing_address="siteb.example.com", peer_key=api.peer.site_key()[0])  # fmt: skip
    picture = api.client.get("/console/topology").text
    assert 'data-kind="connected-site" data-from="SiteA" data-to="SiteB" data-health="ok"' in (
        picture
    )
    assert 'data-kind="replication" data-from="SiteB" data-to="SiteA"' in picture
    assert 'data-site="SiteB"' in picture  # a site not replicated yet still shows


# -- replicas, over real sockets between two running sites --------------------------------------


def test_console_shows_replicas_read_only(tmp_path: Path) -> None:
    async def scenario() -> None:
        addresses = {"SiteA": "127.10.75.41", "SiteB": "127.10.75.42"}
        async with organisation(tmp_path, addresses) as org:
            a, b = org.create("SiteA"), org.create("SiteB")
            bob = b.service.add_recipient(ObjectKind.MAILBOX, "bob", display_name="Bob")
            org.connect(a, b)
            org.connect(b, a)
            await org.start(a)
            await org.start(b)
            assert a.server is not None
            assert a.server.api_address is not None
            host, port = a.server.api_address
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as http:
                logged = await http.post("/console/login", data={"token": a.service.admin_token()})
                assert logged.status_code == 303
                http.cookies = logged.cookies
                home = await http.get("/console/")
                match = CSRF.search(home.text)
                assert match is not None
                csrf = match.group(1)
                await http.post("/console/replication/SiteB/request-now", data={"csrf": csrf})
                await until(idle(a, "SiteB"), what="A idle")
                listed = await http.get("/console/recipients", params={"site": "SiteB"})
                assert 'data-alias="bob"' in listed.text
                assert '<span class="badge">replica</span>' in listed.text
                page = await http.get(f"/console/recipients/{bob.guid}")
                assert "Read-only replica" in page.text
                assert "<fieldset disabled>" in page.text
                refused = await http.post(
                    f"/console/recipients/{bob.guid}",
                    data={"csrf": csrf, "display_name": "Robert"},
                    follow_redirects=True,
                )
                assert 'class="flash error"' in refused.text
                assert b.service.get_recipient("bob").display_name == "Bob"
                site_b = await http.get("/console/sites/SiteB")
                assert "Read-only replica" in site_b.text

    asyncio.run(asyncio.wait_for(scenario(), 90))


# -- request bodies ------------------------------------------------------------------------------


def test_bodies_over_the_limit_are_refused_before_anyone_reads_them(api: Api) -> None:
    """The login form needs no token, so its body must not be buffered whole: a declared
    length over the limit, and a chunked body that grows past it, get 413."""
    big = b"token=" + b"x" * (MAX_BODY + 1)
    declared = api.client.post(
        "/console/login",
        content=big,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert declared.status_code == 413
    assert declared.json()["code"] == "too_large"

    def chunks() -> Iterator[bytes]:
        yield b"token="
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"x" * 65536

    chunked = api.client.post(
        "/console/login",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert chunked.status_code == 413
    api_body = api.client.post(
        "/api/recipients",
        content=b'{"kind": "mailbox", "alias": "' + b"a" * (MAX_BODY + 1) + b'"}',
        headers={**api.auth, "Content-Type": "application/json"},
    )
    assert api_body.status_code == 413
    assert api.service.list_recipients(None) == []
    # an ordinary body still goes through
    assert api.client.post("/console/login", data={"token": "wrong"}).status_code == 401


# -- a message's path across two running sites ---------------------------------------------------


def test_console_follows_a_message_across_sites(tmp_path: Path) -> None:
    """A message from the Internet reaches SiteA for SiteB's user; in SiteA's console, Follow
    across sites asks SiteB, and the path page (looking again while it waits) shows SiteB's
    delivery after SiteA's relay, in time order."""

    async def scenario() -> None:
        addresses = {"SiteA": "127.10.75.51", "SiteB": "127.10.75.52"}
        async with organisation(tmp_path, addresses) as org:
            a, b = await replicated_pair(org)
            message_id = "<console-path@internet.test>"
            raw = (
                "From: someone@internet.test\r\nTo: user2@siteb.example.com\r\n"
                f"Message-ID: {message_id}\r\nSubject: across\r\n\r\nhello\r\n"
            )
            await asyncio.to_thread(
                a.send, "someone@internet.test", ["user2@siteb.example.com"], raw.encode()
            )
            await until(
                lambda: any(
                    e.event == "delivered" for e in b.service.queue.search(
                        recipient="user2@siteb.example.com")
                ),
                what="delivered at SiteB",
            )  # fmt: skip
            assert a.server is not None
            assert a.server.api_address is not None
            host, port = a.server.api_address
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as http:
                logged = await http.post("/console/login", data={"token": a.service.admin_token()})
                http.cookies = logged.cookies
                found = await http.get(
                    "/console/tracking", params={"recipient": "user2@siteb.example.com"}
                )
                assert message_id.strip("<>") in found.text
                page = await http.get("/console/tracking/path", params={"ref": message_id})
                assert 'data-site="SiteA" data-event="relayed"' in page.text
                assert 'data-site="SiteB"' not in page.text  # not asked yet
                match = CSRF.search(page.text)
                assert match is not None
                asked = await http.post(
                    "/console/tracking/ask",
                    data={"csrf": match.group(1), "ref": message_id},
                    follow_redirects=True,
                )
                assert "asked SiteB" in asked.text
                assert 'data-waiting="yes"' in asked.text  # the page will look again
                token = re.search(r"token=([A-Za-z0-9_-]+)", str(asked.url))
                assert token is not None
                fragment = ""
                for _ in range(100):
                    response = await http.get(
                        "/console/tracking/path",
                        params={"ref": message_id, "token": token.group(1)},
                        headers={"HX-Request": "true", "HX-Target": "path"},
                    )
                    fragment = response.text
                    if 'data-answered="yes"' in fragment:
                        break
                    await asyncio.sleep(0.2)
                assert fragment.startswith('<div id="path"')
                assert 'data-waiting="no"' in fragment  # every site answered: no more looking
                sites = re.findall(r'data-site="(Site[AB])" data-event="(\w+)"', fragment)
                assert ("SiteA", "relayed") in sites
                assert ("SiteB", "delivered") in sites
                # A records "relayed" when B's 250 comes back, which may be after B's own
                # delivery: the order that holds is A's receipt before B's delivery.
                assert sites.index(("SiteA", "received")) < sites.index(("SiteB", "delivered"))
                assert '<span class="hop">SiteA</span> → <span class="hop">SiteB</span>' in fragment

    asyncio.run(asyncio.wait_for(scenario(), 120))
