"""Message tracking across sites over real SMTP (docs/tracking.md): a message from SiteA's
user to SiteB's, then SiteA asks the other sites and sees SiteB's delivery in the path; a
forged, expired, misaddressed or replayed track-query or track-answer changes nothing.

Sites on 127.10.67.x (real `SiteServer`s of the multi-site harness, tests/support/org.py).
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.support.org import replicated_pair
from typer.testing import CliRunner, Result

from sitemail.admin import cli
from sitemail.admin.wake import poke
from sitemail.replication import state, tracking
from sitemail.replication.codec import MessageType, ReplicationMessage, encode_message
from sitemail.replication.keys import generate_site_key, load_site_key

from .conftest import Org, Site, organisation, until

ADDRESSES = {"SiteA": "127.10.67.10", "SiteB": "127.10.67.15", "SiteC": "127.10.67.20"}
MESSAGE_ID = "<track-one@sitea.example.com>"
BODY = (
    b"From: user1@sitea.example.com\r\nTo: user2@siteb.example.com\r\nSubject: across\r\n"
    b"Message-ID: " + MESSAGE_ID.encode() + b"\r\n\r\nhello SiteB\r\n"
)

runner = CliRunner()


def run(scenario: Callable[[], Awaitable[None]], limit: float = 150) -> None:
    asyncio.run(asyncio.wait_for(scenario(), limit))


def cli_run(*args: str | Path) -> Result:
    return runner.invoke(cli.app, [str(a) for a in args])


async def two_sites(org: Org) -> tuple[Site, Site]:
    return await replicated_pair(org)


def signed(
    key_dir: Path,
    kind: MessageType,
    body: dict[str, Any],
    *,
    seq: int,
    origin: str,
    target: str,
    expires_in: float = 600,
) -> bytes:
    """A tracking message signed with the key in `key_dir` (a site's own, or a forger's)."""
    key = load_site_key(key_dir) if (key_dir / "keys").exists() else generate_site_key(key_dir)
    now = time.time()  # the servers run on the system clock
    message = ReplicationMessage(
        kind, "ExchangeORG", origin, target, seq, int(now + expires_in), body
    )
    return encode_message(
        message,
        key,
        sender=f"sitemail-dsa@{origin.lower()}.example.com",
        recipient=f"sitemail-dsa@{target.lower()}.example.com",
        now=now,
    )


def send_to_dsa(site: Site, raw: bytes) -> None:
    with smtplib.SMTP(site.address, site.port, local_hostname="attacker.test", timeout=10) as c:
        c.sendmail("", [f"sitemail-dsa@{site.domain}"], raw)


def answers_sent(site: Site, to: Site) -> int:
    """Replication messages `site` relayed to `to`'s directory-service mailbox."""
    events = site.service.queue.search(recipient=f"sitemail-dsa@{to.domain}", limit=1000)
    return sum(1 for e in events if e.event == "relayed")


def ignored_at(site: Site) -> int:
    """Tracking answers `site` took and ignored (a token it never sent to their origin)."""
    events = site.service.queue.search(recipient=f"sitemail-dsa@{site.domain}", limit=1000)
    return sum(1 for e in events if e.event == "delivered" and "unknown-token" in e.detail)


def rejected(site: Site) -> dict[str, int]:
    return site.service.replication.status().rejected


def marks(site: Site, peer: str) -> tuple[int, int]:
    with site.service.store.read() as conn:
        row = state.get_peer(conn, peer)
    return int(row.hw_request), int(row.hw_answer)


def test_tracking_across_sites_shows_the_delivery_at_the_other_site(tmp_path: Path) -> None:
    """user1@SiteA mails user2@SiteB; SiteA asks every site it can address: SiteB answers
    with its events (its delivery among them), SiteC (known, not running) stays pending; the
    CLI prints the merged timeline with a site column and names SiteC as not answering."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a, b = await two_sites(org)
            c = org.create("SiteC")  # known at A by its connector; never started
            org.connect(a, c)
            refused = await asyncio.to_thread(
                a.send, "user1@sitea.example.com", ["user2@siteb.example.com"], BODY
            )
            assert refused == {}
            await until(lambda: len(b.inbox("user2")) == 1, what="user2 at SiteB")

            asked = a.service.tracking.ask_sites(MESSAGE_ID)
            assert (asked.asked, asked.skipped) == (("SiteB", "SiteC"), ())
            poke(a.data_dir)
            await until(
                lambda: a.service.tracking.path(MESSAGE_ID).answered == ("SiteB",),
                what="SiteB's answer",
            )
            path = a.service.tracking.path(MESSAGE_ID)
            assert path.pending == ("SiteC",)
            assert {e.site for e in path.events} == {"SiteA", "SiteB"}
            delivered = [e for e in path.events if e.site == "SiteB" and e.event == "delivered"]
            assert [e.recipient for e in delivered] == ["user2@siteb.example.com"]
            assert [e.at for e in path.events] == sorted(e.at for e in path.events)
            b_marks = marks(b, "SiteA")

            # The CLI, by queue id at A: asks again, shows what every site said last.
            (relayed,) = [e for e in path.events if e.site == "SiteA" and e.event == "relayed"]
            result = await asyncio.to_thread(
                cli_run, "track", relayed.queue_id, "--all-sites", "--wait", "2", "--json",
                "-D", a.data_dir,
            )  # fmt: skip
            assert result.exit_code == 0, result.output
            shown = json.loads(result.stdout)
            assert shown["message_id"] == MESSAGE_ID
            assert shown["asked"] == ["SiteB", "SiteC"]
            assert "SiteC" in shown["pending"]
            assert ("SiteB", "delivered") in {(e["site"], e["event"]) for e in shown["events"]}
            text = await asyncio.to_thread(
                cli_run, "track", MESSAGE_ID, "--all-sites", "--wait", "0", "-D", a.data_dir
            )
            assert text.exit_code == 0, text.output
            lines = text.output.splitlines()
            assert any(" SiteB " in line and " delivered " in line for line in lines)
            assert any(
                line.startswith("no answer within 0 s from") and "SiteC" in line for line in lines
            )
            assert (
                cli_run("track", "NOSUCHQUEUEID", "--all-sites", "-D", a.data_dir).exit_code == 66
            )
            assert cli_run("track", MESSAGE_ID, "--wait", "1", "-D", a.data_dir).exit_code == 64
            await until(lambda: not b.service.queue.entries(), what="B's queue empty")
            assert marks(b, "SiteA") == b_marks  # answering moved no high-water mark
            assert c.server is None

    run(scenario)


def test_forged_and_replayed_tracking_messages_change_nothing(tmp_path: Path) -> None:
    """A track-query or track-answer signed by a forger, expired, misaddressed or seen
    before is refused and counted; nothing is answered or stored, no watermark moves."""

    async def scenario() -> None:
        async with organisation(tmp_path, ADDRESSES) as org:
            a, b = await two_sites(org)
            token = "b" * 32  # a query A sent to B that is still unanswered
            with a.service.store.write() as conn:
                tracking.record_query(conn, token, MESSAGE_ID, ["SiteB"], time.time())
            mallory = tmp_path / "mallory"
            query = {"token": "a" * 32, "message_id": MESSAGE_ID}
            answer = {
                "token": token,
                "message_id": MESSAGE_ID,
                "events": [{"at": 1.0, "event": "delivered", "queue_id": "X", "detail": "lie"}],
                "truncated": False,
            }
            fresh = 10_000  # above every sequence number A and B have used
            at_b = [
                ("bad-signature", signed(mallory, MessageType.TRACK_QUERY, query, seq=fresh,
                                         origin="SiteA", target="SiteB")),
                ("expired", signed(a.data_dir, MessageType.TRACK_QUERY, query, seq=fresh + 1,
                                   origin="SiteA", target="SiteB", expires_in=-60)),
                ("misaddressed", signed(a.data_dir, MessageType.TRACK_QUERY, query,
                                        seq=fresh + 2, origin="SiteA", target="SiteC")),
            ]  # fmt: skip
            at_a = [
                ("bad-signature", signed(mallory, MessageType.TRACK_ANSWER, answer, seq=fresh,
                                         origin="SiteB", target="SiteA")),
                ("unknown-origin", signed(mallory, MessageType.TRACK_ANSWER, answer, seq=fresh,
                                          origin="SiteZ", target="SiteA")),
            ]  # fmt: skip
            hw = (marks(a, "SiteB"), marks(b, "SiteA"))
            for site, attacks in ((b, at_b), (a, at_a)):
                for reason, raw in attacks:
                    before = (site.snapshot(), rejected(site))
                    await asyncio.to_thread(send_to_dsa, site, raw)
                    await until(
                        lambda s=site, r=reason, c=before[1]: (
                            rejected(s).get(r, 0) == c.get(r, 0) + 1
                        ),
                        what=f"{reason} counted at {site.name}",
                    )
                    assert site.snapshot() == before[0]
            await until(lambda: not b.service.queue.entries(), what="B sent nothing")
            sent = answers_sent(b, a)
            path = a.service.tracking.path(MESSAGE_ID)
            assert (path.pending, path.events) == (("SiteB",), ())

            # A genuine query (signed with A's real key) is answered once; the same bytes
            # again are a replay: no second answer.
            genuine = signed(a.data_dir, MessageType.TRACK_QUERY, query, seq=fresh + 3,
                             origin="SiteA", target="SiteB")  # fmt: skip
            await asyncio.to_thread(send_to_dsa, b, genuine)
            await until(lambda: answers_sent(b, a) == sent + 1, what="B answered")
            counts = rejected(b)
            await asyncio.to_thread(send_to_dsa, b, genuine)
            await until(lambda: rejected(b).get("replay", 0) == counts.get("replay", 0) + 1)
            await until(lambda: not b.service.queue.entries(), what="B's queue empty")
            assert answers_sent(b, a) == sent + 1
            # That answer carried token "aaa...", which A never sent: ignored, nothing stored.
            await until(lambda: ignored_at(a) == 1, what="A ignored the stray answer")
            path = a.service.tracking.path(MESSAGE_ID)
            assert (path.pending, path.events) == (("SiteB",), ())
            assert (marks(a, "SiteB"), marks(b, "SiteA")) == hw

    run(scenario)
