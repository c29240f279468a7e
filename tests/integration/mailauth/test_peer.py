"""A real outside verifier checks our signatures, and we check its: Postfix + OpenDKIM + OpenDMARC.

The acceptance test of issue 20: Debian's Postfix with OpenDKIM and OpenDMARC as milters
(tests/support/milterpeer.py) receives a message from a user of our site and records
`dkim=pass` and `dmarc=pass` for our domain; the same peer, OpenDKIM signing, sends a message
to our user, and our edge records `dkim=pass` (and `dmarc=pass`) for the peer's domain. All
names resolve through the lab's DNS server, serving the records each side publishes.
"""

from __future__ import annotations

import dataclasses
import smtplib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.edgesite import DOMAIN, EdgeSite, edge_site, txt
from tests.support.milterpeer import PEER_DOMAIN, PEER_SELECTOR, MilterPeer, available, milter_peer
from tests.support.org import free_port

pytestmark = [
    pytest.mark.postfix,
    pytest.mark.skipif(not available(), reason="postfix, opendkim, opendmarc or root missing"),
]

DNS = "127.33.3.1"  # port 53: the milters' resolvers cannot be given another port
DKIM_MILTER = "127.33.3.2"
DMARC_MILTER = "127.33.3.3"
SITE = "127.33.3.10"
PEER = "127.33.3.21"
PEER_CLIENT = "127.33.3.20"  # hands the peer mail to sign and relay (its "internal host")
USER = "127.33.3.30"  # a client our site trusts to relay (as its users' submission)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EdgeSite, MilterPeer]]:
    root = tmp_path_factory.mktemp("peer")
    ports: dict[str, int] = {}

    def tune(config: Any) -> Any:
        smtp = dataclasses.replace(
            config.smtp, outbound_port=ports["peer"], trusted_networks=(f"{USER}/32",)
        )
        return dataclasses.replace(config, smtp=smtp)

    ports["peer"] = free_port(PEER)
    with edge_site(root / "site", SITE, DNS, [PEER_DOMAIN], dns_port=53, tune=tune) as site:
        dns = site.dns
        site.publish_own_records()
        dns.add(DOMAIN, "TXT", txt(f"v=spf1 ip4:{SITE} -all"))
        dns.add(f"_dmarc.{DOMAIN}", "TXT", txt("v=DMARC1; p=reject"))
        dns.add(PEER_DOMAIN, "MX", f"10 mx.{PEER_DOMAIN}.")
        dns.add(f"mx.{PEER_DOMAIN}", "A", PEER)
        dns.add(PEER_DOMAIN, "TXT", txt(f"v=spf1 ip4:{PEER} -all"))
        dns.add(f"_dmarc.{PEER_DOMAIN}", "TXT", txt("v=DMARC1; p=reject"))
        with milter_peer(
            root / "peer",
            address=PEER,
            port=ports["peer"],
            dkim_address=DKIM_MILTER,
            dmarc_address=DMARC_MILTER,
            dns_address=DNS,
            internal_client=PEER_CLIENT,
            relayhost=f"[{SITE}]:{site.port}",
        ) as peer:
            dns.add(f"{PEER_SELECTOR}._domainkey.{PEER_DOMAIN}", "TXT", txt(peer.key_txt))
            yield site, peer


def _results(message: bytes, authserv_id: str) -> str:
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode(errors="replace")
    unfolded = head.replace("\r\n", "\n").replace("\n\t", " ").replace("\n ", " ")
    return "\n".join(
        line
        for line in unfolded.split("\n")
        if line.lower().startswith(f"authentication-results: {authserv_id}")
    )


def test_peer_opendkim_opendmarc_verify_our_mail(pair: tuple[EdgeSite, MilterPeer]) -> None:
    """OpenDKIM records dkim=pass (RSA and Ed25519) and OpenDMARC dmarc=pass for a message
    from our user."""
    site, peer = pair
    sender = f"jsmith@{DOMAIN}"
    body = (
        f"From: John Smith <{sender}>\r\nTo: <friend@{PEER_DOMAIN}>\r\n"
        f"Subject: to the peer\r\nMessage-ID: <topeer@sitea>\r\n\r\nhello peer\r\n"
    ).encode()
    assert site.send(USER, sender, [f"friend@{PEER_DOMAIN}"], body)[0] == 250
    results = _results(peer.wait_for(b"Message-ID: <topeer@sitea>"), PEER_DOMAIN)
    assert "dkim=pass" in results, results
    assert f"header.d={DOMAIN}" in results, results
    assert "dmarc=pass" in results, results
    assert f"header.from={DOMAIN}" in results, results
    ed25519 = f"dkim=pass header.d={DOMAIN} header.i=@{DOMAIN} header.a=ed25519-sha256"
    assert ed25519 in results, results  # OpenDKIM checks RFC 8463 signatures too


def test_peer_signs_and_we_verify(pair: tuple[EdgeSite, MilterPeer]) -> None:
    """Mail signed by OpenDKIM at the peer arrives with our dkim=pass for its domain."""
    site, peer = pair
    sender = f"friend@{PEER_DOMAIN}"
    body = (
        f"From: Friend <{sender}>\r\nTo: <jsmith@{DOMAIN}>\r\nSubject: from the peer\r\n"
        f"Message-ID: <frompeer@peer>\r\nDate: Mon, 7 Dec 2026 21:00:00 +0000\r\n\r\nhi\r\n"
    ).encode()
    with smtplib.SMTP(PEER, peer.port, source_address=(PEER_CLIENT, 0), timeout=30) as client:
        client.sendmail(sender, [f"jsmith@{DOMAIN}"], body)
    deadline = time.monotonic() + 30
    stored = b""
    while time.monotonic() < deadline and not stored:
        stored = next((m for m in site.folder("jsmith") if b"<frompeer@peer>" in m), b"")
        time.sleep(0.1)
    assert stored, peer.log_text()
    assert b"DKIM-Signature:" in stored
    results = _results(stored, "exchangeorg")
    assert f"dkim=pass header.d={PEER_DOMAIN} header.s={PEER_SELECTOR}" in results, results
    assert "spf=pass" in results, results
    assert f"dmarc=pass (p=reject dis=none) header.from={PEER_DOMAIN}" in results, results
