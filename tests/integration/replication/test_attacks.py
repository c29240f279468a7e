"""Each attack on replication (issue 4, item 4) over real SMTP leaves the directory unchanged.

A and B replicate for real first; then messages built with B's real key (or a forger's) are
sent by SMTP to A's directory-service mailbox, each one bad in one way. A must consume it,
change nothing (compared row by row), send nothing (no answer, no DSN) and count the reason.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import smtplib
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sitemail.admin.wake import poke
from sitemail.core.errors import NotFoundError
from sitemail.replication.codec import MessageType, ReplicationMessage, encode_message
from sitemail.replication.keys import generate_site_key, load_site_key

from .conftest import Site, idle, organisation, until

NOW_SLACK = 3600


def run(scenario: Callable[[], Awaitable[None]], limit: float = 90) -> None:
    asyncio.run(asyncio.wait_for(scenario(), limit))


def answer_body(origin: str) -> dict[str, Any]:
    """An answer that would add a mailbox to `origin`'s naming context if it were believed."""
    guid = str(uuid.uuid4())
    obj = {
        "guid": guid,
        "site": origin,
        "kind": "mailbox",
        "name": "intruder",
        "display_name": "Intruder",
        "attrs": {"proxies": [f"SMTP:intruder@{origin.lower()}.example.com"]},
        "usn_created": 10_000,
        "usn_changed": 10_000,
        "version": 1,
        "is_deleted": False,
        "changed_at": 0.0,
    }
    return {
        "in_reply_to": 0,
        "ncs": {origin: {"from": 0, "to": 10_000, "high": 10_000}},
        "objects": [obj],
        "more": False,
    }


def build(
    key_site: Site | Path,
    *,
    seq: int,
    origin: str = "SiteB",
    target: str = "SiteA",
    org: str = "ExchangeORG",
    expires_in: float = NOW_SLACK,
    kind: MessageType = MessageType.ANSWER,
    body: dict[str, Any] | None = None,
) -> bytes:
    import time  # noqa: PLC0415 - real time: the servers run on the system clock

    path = key_site.data_dir if isinstance(key_site, Site) else key_site
    key = load_site_key(path) if (path / "keys").exists() else generate_site_key(path)
    now = time.time()
    message = ReplicationMessage(
        kind, org, origin, target, seq, int(now + expires_in), body or answer_body(origin)
    )
    return encode_message(
        message,
        key,
        sender=f"sitemail-dsa@{origin.lower()}.example.com",
        recipient="sitemail-dsa@sitea.example.com",
        now=now,
    )


def tamper(raw: bytes) -> bytes:
    """Same signature, different payload: the intruder's display name changed."""
    mail = email.message_from_bytes(raw, policy=email.policy.SMTP)
    payload = json.loads(zlib.decompress(base64.b64decode(mail.get_payload())))
    payload["body"]["objects"][0]["display_name"] = "Changed In Transit"
    new_body = base64.encodebytes(zlib.compress(json.dumps(payload).encode())).decode()
    head = raw.split(b"\r\n\r\n", 1)[0]
    return head + b"\r\n\r\n" + new_body.replace("\n", "\r\n").encode()


def send_to_dsa(site: Site, raw: bytes) -> None:
    send_to(site, "sitemail-dsa@sitea.example.com", raw)


def send_to(site: Site, recipient: str, raw: bytes) -> None:
    with smtplib.SMTP(site.address, site.port, local_hostname="attacker.test", timeout=10) as c:
        c.sendmail("", [recipient], raw)


def rejected(site: Site) -> dict[str, int]:
    return site.service.replication.status().rejected


def test_replication_attacks_change_nothing(tmp_path: Path) -> None:
    """Forged, tampered, replayed, expired, misaddressed, foreign and malformed: all refused."""

    async def scenario() -> None:
        async with organisation(tmp_path) as org:
            a, b = org.create("SiteA"), org.create("SiteB")
            b.add_mailboxes(3)
            org.connect(a, b)
            org.connect(b, a)
            await org.start(a)
            await org.start(b)
            a.request_now("SiteB")
            await until(idle(a, "SiteB"))
            hw = next(p for p in a.service.replication.status().peers if p.peer == "SiteB")
            assert hw.answers_received == 1
            mallory = tmp_path / "mallory"
            fresh = 10_000  # above every sequence number B has used
            attacks = [
                ("bad-signature", build(mallory, seq=fresh)),  # forged: not B's key
                ("bad-signature", tamper(build(b, seq=fresh + 1))),
                ("expired", build(b, seq=fresh + 2, expires_in=-60)),
                ("misaddressed", build(b, seq=fresh + 3, target="SiteC")),
                ("wrong-organisation", build(b, seq=fresh + 4, org="OtherORG")),
                ("unknown-origin", build(mallory, seq=1, origin="SiteZ")),
                ("malformed", b"Subject: hello\r\n\r\nnot a replication message\r\n"),
                ("replay", build(b, seq=1)),  # B's first answer was seq <= this
            ]
            for reason, raw in attacks:
                before = a.snapshot()
                counts = rejected(a)
                await asyncio.to_thread(send_to_dsa, a, raw)
                await until(
                    lambda r=reason, c=counts: rejected(a).get(r, 0) == c.get(r, 0) + 1,
                    what=f"{reason} counted",
                )
                await until(lambda: not a.service.queue.entries(), what="A's queue empty")
                assert a.snapshot() == before, reason
                assert "intruder" not in a.aliases("SiteB")
            # A genuine message once, then the very same bytes again: the replay is dropped.
            genuine = build(b, seq=fresh + 10)
            await asyncio.to_thread(send_to_dsa, a, genuine)
            await until(lambda: "intruder" in a.aliases("SiteB"), what="genuine applied")
            after_genuine = a.snapshot()
            counts = rejected(a)
            await asyncio.to_thread(send_to_dsa, a, genuine)
            await until(lambda: rejected(a).get("replay", 0) == counts.get("replay", 0) + 1)
            await until(lambda: not a.service.queue.entries())
            assert a.snapshot() == after_genuine
            assert not b.service.queue.entries()  # nothing was sent to the claimed sender

    run(scenario)


def test_ping_comes_back_as_a_pong_and_a_forged_ping_gets_nothing(tmp_path: Path) -> None:
    """The doctor's round trip: A's signed ping reaches B's directory-service mailbox over
    SMTP, B's signed pong comes back to A's. A ping not signed by A's key changes nothing at
    B and makes no pong; neither moves the replication high-water marks."""

    async def scenario() -> None:
        async with organisation(tmp_path) as org:
            a, b = org.create("SiteA"), org.create("SiteB")
            org.connect(a, b)
            org.connect(b, a)
            await org.start(a)
            await org.start(b)
            token = a.service.replication.ping("SiteB")
            poke(a.data_dir)
            await until(lambda: a.service.replication.pong_at(token) is not None, what="pong")
            assert a.service.replication.pong_at("0" * 32) is None
            marks = next(p for p in b.service.replication.status().peers if p.peer == "SiteA")
            assert (marks.requests_served, marks.answers_received) == (0, 0)
            before = b.snapshot()
            counts = rejected(b)
            forged = ReplicationMessage(
                MessageType.PING, "ExchangeORG", "SiteA", "SiteB", 10_000,
                int(time.time() + 600), {"token": "f" * 32},
            )  # fmt: skip
            raw = encode_message(
                forged,
                generate_site_key(tmp_path / "mallory"),
                sender="sitemail-dsa@sitea.example.com",
                recipient="sitemail-dsa@siteb.example.com",
                now=time.time(),
            )
            await asyncio.to_thread(send_to, b, "sitemail-dsa@siteb.example.com", raw)
            await until(
                lambda: rejected(b).get("bad-signature", 0) == counts.get("bad-signature", 0) + 1,
                what="forged ping refused",
            )
            await until(lambda: not b.service.queue.entries(), what="B's queue empty")
            assert b.snapshot() == before
            assert a.service.replication.pong_at("f" * 32) is None
            with pytest.raises(NotFoundError):
                a.service.replication.ping("SiteZ")

    run(scenario)
