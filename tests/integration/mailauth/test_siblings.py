"""Sibling sites trust the edge: the site that receives from the Internet checks, the next
site (whose hop is not the Internet) does not check again.

Two real sites replicate over SMTP (tests/support/org.py), both with the lab's DNS server as
their name server, so both could check: mail from outside for SiteB's user enters at SiteA,
which records its Authentication-Results; SiteB stores the message with that one field.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from tests.support.org import delivered, mailbox, organisation, replicate, until
from tests.support.processes import configure

from sitemail.lab.dns_server import EmbeddedDnsServer

ADDRESSES = {"SiteA": "127.33.5.1", "SiteB": "127.33.5.2"}
DNS = "127.33.5.3"


def test_siblings_trust_the_edge_result(tmp_path: Path) -> None:
    """One Authentication-Results (SiteA's) on the copy SiteB delivers."""

    async def scenario() -> None:
        with EmbeddedDnsServer(DNS, 0, zones=["internet.test"]) as dns:
            # SPF passes the test's client (127.0.0.1), not SiteA: were SiteB to check again,
            # it would replace SiteA's field with its own spf=fail
            dns.add("internet.test", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
            async with organisation(tmp_path, ADDRESSES) as org:
                a, b = org.create("SiteA"), org.create("SiteB")
                mailbox(a, "user1")
                mailbox(b, "user2")
                for site in (a, b):
                    configure(site.data_dir, {"dns": f'nameservers = ["{DNS}:{dns.port}"]'})
                for x, y in ((a, b), (b, a)):
                    org.connect(x, y)
                    org.link(x, y)
                await org.start(a)
                await org.start(b)
                await replicate([(a, b)])
                body = (
                    b"From: someone@internet.test\r\nSubject: in\r\n"
                    b"Message-ID: <in@internet.test>\r\n\r\nhi\r\n"
                )
                refused = await asyncio.to_thread(
                    a.send, "someone@internet.test", ["user2@siteb.example.com"], body
                )
                assert refused == {}
                await until(delivered(b, "user2"), what="user2 has it at SiteB")
                (got,) = b.inbox("user2")
                fields = [
                    line
                    for line in got.content.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                    if line.lower().startswith(b"authentication-results:")
                ]
                assert fields == [b"Authentication-Results: exchangeorg;"]
                unfolded = re.sub(rb"\r\n[ \t]+", b" ", got.content)  # where it folds varies
                assert b"spf=pass smtp.mailfrom=internet.test" in unfolded

    asyncio.run(asyncio.wait_for(scenario(), 120))
