"""A flood of self-signed requests cannot keep a real new site out of the pending partners.

An outsider who knows the organisation's name can sign requests under made-up site names
with keys of its own (issue 19). Each network (IPv4 /24) may hold 10 of the 100 places; when
the table is full, the self-signed entry seen least recently gives way. So after strangers
from ten networks have filled the table and one of them keeps sending, a real new site's
first request is still held, accepted by the admin, and answered.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
from pathlib import Path

from typer.testing import CliRunner

from sitemail.directory import ObjectKind
from sitemail.main import cli
from sitemail.replication.codec import MessageType, ReplicationMessage, encode_message
from sitemail.replication.keys import generate_site_key
from sitemail.replication.replicator import MAX_PENDING, PENDING_PER_NETWORK

from .conftest import Site, organisation, until

ADDRESSES = {"SiteA": "127.28.0.1", "SiteB": "127.28.0.2", "SiteC": "127.28.20.1"}
NETWORKS = MAX_PENDING // PENDING_PER_NETWORK  # enough strangers' networks to fill the table


def stranger_request(root: Path, origin: str) -> bytes:
    """A request signed by a key of the stranger's own, carrying that key (self-signed)."""
    key = generate_site_key(root / origin)
    now = time.time()
    body = {
        "ncs": {},
        "exclude": [origin],
        "full": False,
        "key": key.public.token,
        "routing_address": f"{origin.lower()}.attacker.test",
        "bridgehead": "Box",
    }
    message = ReplicationMessage(
        MessageType.REQUEST, "ExchangeORG", origin, "SiteA", 1, int(now + 3600), body
    )
    return encode_message(
        message,
        key,
        sender=f"sitemail-dsa@{origin.lower()}.attacker.test",
        recipient="sitemail-dsa@sitea.example.com",
        now=now,
    )


def flood(site: Site, source: str, requests: list[bytes]) -> None:
    """Send every request over one SMTP session from `source`."""
    with smtplib.SMTP(
        site.address, site.port, local_hostname="attacker.test", timeout=30,
        source_address=(source, 0),
    ) as client:  # fmt: skip
        for raw in requests:
            client.sendmail("", ["sitemail-dsa@sitea.example.com"], raw)


def test_pending_flood_leaves_room_for_a_real_new_site(tmp_path: Path) -> None:
    """Ten networks fill the 100 places, one of them sends more (refused: its share is
    taken); SiteC's first request still gets a place, and once accepted SiteC replicates."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a, c = org.create("SiteA"), org.create("SiteC")
            a.service.add_recipient(ObjectKind.MAILBOX, "alice", display_name="Alice")
            org.connect(c, a)  # the new site's admin configured its side only
            org.route(a, c)
            await org.start(a)
            await org.start(c)
            keys = tmp_path / "strangers"
            for n in range(1, NETWORKS + 1):
                names = [f"Fake{n:02d}x{i:02d}" for i in range(PENDING_PER_NETWORK)]
                requests = [stranger_request(keys, name) for name in names]
                await asyncio.to_thread(flood, a, f"127.28.{n}.9", requests)
            more = [stranger_request(keys, f"Fake01y{i}") for i in range(5)]
            await asyncio.to_thread(flood, a, "127.28.1.10", more)

            def counted() -> bool:
                rejected = a.service.replication.status().rejected
                return (
                    len(a.service.replication.pending()) == MAX_PENDING
                    and rejected.get("too-many-pending", 0) == len(more)
                    and not a.service.queue.entries()
                )

            await until(counted, limit=60, what="the flood held and refused")
            c.request_now("SiteA")
            await until(
                lambda: "SiteC" in {p.origin for p in a.service.replication.pending()},
                what="SiteC's first request held",
            )
            held = {p.origin: p for p in a.service.replication.pending()}
            assert len(held) == MAX_PENDING
            assert "Fake01x00" not in held  # the entry seen least recently gave way
            assert a.service.replication.status().rejected.get("pending-evicted") == 1
            listed = CliRunner().invoke(
                cli.app, ["replication", "pending", "list", "--json", "-D", str(a.data_dir)]
            )
            networks = {row["site"]: row["network"] for row in json.loads(listed.stdout)}
            assert networks["Fake02x00"] == "127.28.2.0/24"
            assert len(networks) == MAX_PENDING
            fingerprint = c.service.site_key()[1]
            a.service.replication.accept_pending("SiteC", fingerprint=fingerprint)
            await until(lambda: "alice" in c.aliases("SiteA"), what="SiteC replicated SiteA")

    asyncio.run(asyncio.wait_for(scenario(), 180))
