"""`/metrics` on the admin port (issue 22 item 3), scraped while mail flows over real SMTP.

A running SiteA (every listener, in its own thread) delivers to a mailbox of its own, relays
`peer.test` to Postfix's smtp-sink and `dead.test` to an address where nothing listens; one
message has too many Received headers and bounces. The counters are read with
prometheus_client's own parser and checked against what was sent. Addresses: 127.36.0.10
(the site), 127.36.0.11 (smtp-sink), 127.36.0.12 (nobody).
"""

from __future__ import annotations

import asyncio
import imaplib
import smtplib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support import processes
from tests.support.clientsite import ClientSite, client_site, client_tls, free_port
from tests.support.org import Site, delivered, organisation, replicated_pair, until

from sitemail.admin.token import METRICS_TOKEN_FILE, read_token

SITE = "127.36.0.10"
SINK = "127.36.0.11"
DEAD = "127.36.0.12"
SENDER = "someone@peer.test"  # its notices go to the sink too

pytestmark = [
    pytest.mark.postfix,
    pytest.mark.skipif(processes.SMTP_SINK is None, reason="Postfix's smtp-sink is not installed"),
]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ClientSite]:
    with client_site(tmp_path, SITE) as running:
        yield running


def message(subject: str, hops: int = 0) -> bytes:
    received = "".join(f"Received: from hop{i}.test by hop{i + 1}.test\r\n" for i in range(hops))
    return (
        f"{received}From: {SENDER}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@peer.test>\r\n\r\nhello\r\n"
    ).encode()


def send(site: ClientSite, rcpt: str, subject: str, hops: int = 0) -> None:
    with site.smtp() as client:
        client.sendmail(SENDER, [rcpt], message(subject, hops))


def scrape(site: ClientSite, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    url = f"http://{SITE}:{site.ports['admin']}/metrics"
    return httpx.get(url, headers=headers, timeout=20)


def samples(site: ClientSite) -> Samples:
    token = read_token(site.data_dir, METRICS_TOKEN_FILE)
    response = scrape(site, token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def total(found: Samples, name: str) -> float:
    return sum(v for (n, _), v in found.items() if n == name)


def wait(check: Callable[[], bool], what: str, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {limit} s"
        time.sleep(0.1)


def at_sink(dump: Path) -> tuple[int, int]:
    """(messages relayed, failure notices) the sink took."""
    text = dump.read_text(errors="replace") if dump.exists() else ""
    return text.count("Subject: relay "), text.count("multipart/report")


def fail_logins(site: ClientSite) -> None:
    """Two wrong IMAP passwords and one wrong SMTP AUTH (submission, after STARTTLS)."""
    for _ in range(2):
        with pytest.raises(imaplib.IMAP4.error):
            site.imap_tls("alice", "wrong password")
    with site.submission() as client:
        client.starttls(context=client_tls())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("alice", "wrong password")


def test_metrics_count_what_was_sent(site: ClientSite, tmp_path: Path) -> None:
    """Scraped while mail flows: received, delivered by next hop, deferred, bounced by
    reason, DSNs, login failures, connections and the queue gauges match what was sent."""
    site.add_user("alice")
    dead_port = free_port(DEAD)
    with processes.postfix_sink(tmp_path, SINK) as (sink_port, dump):
        site.service.add_domain_route("peer.test", f"{SINK}:{sink_port}")
        site.service.add_domain_route("dead.test", f"{DEAD}:{dead_port}")
        for i in range(3):
            send(site, f"alice@{site.domain}", f"local {i}")
        site.wait_for_inbox("alice", 3)
        early = samples(site)  # mail is still to come: the counters so far
        assert (
            value(early, "sitemail_recipients_delivered_total", transport="local", nexthop="") == 3
        )
        for i in range(2):
            send(site, "bob@peer.test", f"relay {i}")
        send(site, "carol@dead.test", "dead")
        send(site, f"alice@{site.domain}", "looping", hops=60)
        fail_logins(site)
        # 2 relayed + the failure notice of the looping message (to SENDER, at the sink)
        wait(lambda: at_sink(dump) == (2, 1), "2 messages and a notice at the sink")
        wait(
            lambda: (
                value(
                    samples(site),
                    "sitemail_recipients_deferred_total",
                    transport="relay",
                    nexthop=f"{DEAD}:{dead_port}",
                )
                >= 1
            ),
            "the dead hop's deferral counted",
        )
        found = samples(site)
    assert value(found, "sitemail_messages_received_total", origin="external") == 7
    assert value(found, "sitemail_recipients_received_total", origin="external") == 7
    assert value(found, "sitemail_recipients_delivered_total", transport="local", nexthop="") == 3
    hop = {"transport": "relay", "nexthop": f"{SINK}:{sink_port}"}
    assert value(found, "sitemail_recipients_delivered_total", **hop) == 3
    assert value(found, "sitemail_recipients_bounced_total", reason="5.4.6", transport="none") == 1
    assert value(found, "sitemail_dsn_queued_total", kind="failure") == 1
    assert value(found, "sitemail_login_failures_total", protocol="imap") == 2
    # smtplib tries each mechanism offered (PLAIN, LOGIN): one failure each
    assert value(found, "sitemail_login_failures_total", protocol="smtp") == 2
    assert value(found, "sitemail_smtp_connections_total", port=str(site.ports["smtp"])) == 7
    dead = f"relay {DEAD}:{dead_port}"
    assert value(found, "sitemail_queue_recipients", nexthop=dead) == 1
    assert value(found, "sitemail_queue_messages") == 1
    assert value(found, "sitemail_queue_oldest_age_seconds", nexthop=dead) > 0
    for name, _ in early:  # counters only grow
        if name.endswith("_total"):
            assert total(found, name) >= total(early, name), name


def test_metrics_need_a_token(site: ClientSite) -> None:
    """/metrics answers 401 without a token or with a wrong one; the metrics token and the
    admin token both open it."""
    assert scrape(site, None).status_code == 401
    assert scrape(site, "not-the-token").status_code == 401
    assert scrape(site, read_token(site.data_dir, METRICS_TOKEN_FILE)).status_code == 200
    assert scrape(site, read_token(site.data_dir)).status_code == 200


def test_metrics_per_connected_site_and_replication_partner(tmp_path: Path) -> None:
    """Two sites replicating: SiteA counts what it relayed to SiteB under `transport="site"`,
    SiteB counts it received from origin SiteA (proven by the signed trace), and each has a
    replication lag and replication messages for its partner. Addresses 127.36.0.30-31."""

    async def scenario() -> None:
        addresses = {"SiteA": "127.36.0.30", "SiteB": "127.36.0.31"}
        async with organisation(tmp_path, addresses) as org:
            a, b = await replicated_pair(org)
            for i in range(3):
                raw = message(f"to b {i}").replace(
                    b"From: ", b"To: user2@siteb.example.com\r\nFrom: "
                )
                await asyncio.to_thread(
                    a.send, "someone@internet.test", ["user2@siteb.example.com"], raw
                )
            await until(delivered(b, "user2", 3), what="3 messages at SiteB")
            at_a, at_b = await asyncio.gather(*(asyncio.to_thread(org_samples, s) for s in (a, b)))
        assert value(at_a, "sitemail_messages_received_total", origin="external") == 3
        assert (
            value(at_a, "sitemail_recipients_delivered_total", transport="site", nexthop="SiteB")
            == 3
        )
        assert value(at_b, "sitemail_messages_received_total", origin="SiteA") == 3
        assert (
            value(at_b, "sitemail_recipients_delivered_total", transport="local", nexthop="") == 3
        )
        for found, partner in ((at_a, "SiteB"), (at_b, "SiteA")):
            assert ("sitemail_replication_lag_seconds", frozenset({("partner", partner)})) in found
            assert sum(
                v for (n, labels), v in found.items()
                if n == "sitemail_replication_messages_total" and ("partner", partner) in labels
            ) >= 1  # fmt: skip

    asyncio.run(asyncio.wait_for(scenario(), 120))


def org_samples(site: Site) -> Samples:
    """/metrics of a site of the org harness, with its metrics token."""
    assert site.server is not None
    assert site.server.api_address is not None
    host, port = site.server.api_address
    token = read_token(site.data_dir, METRICS_TOKEN_FILE)
    response = httpx.get(
        f"http://{host}:{port}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=20
    )
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
