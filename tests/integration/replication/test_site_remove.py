"""`site remove` on a three-site organisation (real servers, real SMTP on 127.37.0.x): SiteB
is taken out at SiteA and SiteC, which stay clean, exchange mail and replicate; nothing of
SiteB comes back, and SiteB's replication mail is refused as from an unknown partner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.support.org import Org, Site, delivered, knows, mailbox, organisation, replicate, until

from sitemail.admin.doctor import Level, run_doctor
from sitemail.admin.service import AdminService
from sitemail.admin.wake import poke
from sitemail.core.errors import InvalidValueError, NotFoundError
from sitemail.directory import ObjectKind

ADDRESSES = {"SiteA": "127.37.0.11", "SiteB": "127.37.0.12", "SiteC": "127.37.0.13"}


async def three_sites(org: Org) -> tuple[Site, Site, Site]:
    """A, B and C, each with a user, connected both ways in every pair, replicated."""
    a, b, c = (org.create(name) for name in ("SiteA", "SiteB", "SiteC"))
    for site, alias in ((a, "user1"), (b, "user2"), (c, "user3")):
        mailbox(site, alias)
    for x in (a, b, c):
        for y in (a, b, c):
            if x is not y:
                org.connect(x, y)
                org.link(x, y)
    for site in (a, b, c):
        await org.start(site)
    await replicate([(a, b), (a, c), (b, c)], rounds=2)
    return a, b, c


def b_objects(site: Site) -> int:
    return len(site.snapshot("SiteB"))


def doctor_problems(site: Site) -> list[str]:
    """Findings other than the harness's own (no DNS servers, a self-signed certificate).
    The doctor reaches this site's own IMS at its listen address and [smtp] port: the
    harness's port for it is written there, as an admin would on a site not on port 25."""
    config = site.data_dir / "sitemail.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("\n[smtp]\n", f"\n[smtp]\nport = {site.port}\n", 1))
    service = AdminService.open(site.data_dir)
    try:
        findings = run_doctor(service, round_trip_timeout=20, wake=lambda: poke(site.data_dir))
    finally:
        service.close()
    return [
        f"{f.check}: {f.message}"
        for f in findings
        if f.level is not Level.OK and f.check not in {"dns", "tls"}
    ]


def test_site_remove_leaves_two_clean_sites(tmp_path: Path) -> None:
    """Dry run changes nothing; the removal takes B's connector, entry, route and replica at
    A and C, reports A's mail still queued for B, keeps A from learning B again from C, and
    leaves A and C exchanging mail and replicating with a clean doctor."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a, b, c = await three_sites(org)
            assert b_objects(a) > 0
            await org.stop(b)
            late = b"Subject: late\r\n\r\nx"
            await asyncio.to_thread(a.send, "x@internet.example", ["user2@siteb.example.com"], late)
            with pytest.raises(InvalidValueError):
                a.service.remove_site("SiteA")
            with pytest.raises(NotFoundError):
                a.service.remove_site("SiteZ")

            before = a.snapshot()
            plan = await asyncio.to_thread(a.service.remove_site, "SiteB", dry_run=True)
            assert a.snapshot() == before
            assert plan.connector is not None
            assert plan.connected_site is not None
            assert [r.domain for r in plan.domain_routes] == ["siteb.example.com"]
            assert plan.replica_objects == b_objects(a)
            assert [q.recipient for q in plan.queued] == ["user2@siteb.example.com"]
            assert plan.elsewhere == (
                "SiteC's connected-site entry",
                "SiteC's replication connector",
            )

            done = a.service.remove_site("SiteB")
            assert done.queued == plan.queued
            assert b_objects(a) == 0
            assert a.service.directory.lookup("user2@siteb.example.com") is None
            assert "SiteB" not in {c.site for c in a.service.replication.list_connectors()}
            assert "siteb.example.com" not in {r.domain for r in a.service.list_domain_routes()}
            # C still holds B's replica: A does not take it back when it pulls from C.
            await replicate([(a, c)])
            assert b_objects(a) == 0

            c.service.remove_site("SiteB")
            assert b_objects(c) == 0
            await replicate([(a, c)])
            mailbox(c, "user4")
            await replicate([(a, c)])
            await until(knows(a, "user4@sitec.example.com", "SiteC"), what="A learns user4")
            hello = b"Subject: hi\r\n\r\nx"
            await asyncio.to_thread(
                a.send, "x@internet.example", ["user3@sitec.example.com"], hello
            )
            await until(delivered(c, "user3"), what="A's mail delivered at C")
            for site in (a, c):
                assert await asyncio.to_thread(doctor_problems, site) == []
            assert a.service.remove_site("SiteB").nothing  # a second run: nothing left

    asyncio.run(scenario())


def test_site_remove_refuses_the_removed_sites_replication_mail(tmp_path: Path) -> None:
    """A removed site still running sends its requests in vain: refused as from an unknown
    partner (not held as a pending partner), and its objects never come back."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a, b, c = await three_sites(org)
            a.service.remove_site("SiteB")
            c.service.remove_site("SiteB")
            mailbox(b, "user5")
            b.request_now("SiteA")
            await until(
                lambda: a.service.replication.status().rejected.get("unknown-origin", 0) >= 1,
                what="B's request refused at A",
            )
            assert a.service.replication.pending() == []
            assert b_objects(a) == 0
            assert a.service.directory.lookup("user5@siteb.example.com") is None
            assert ObjectKind.SITE not in {
                o.kind for o in a.service.directory.list_objects(ObjectKind.SITE, site="SiteB")
            }

    asyncio.run(scenario())
