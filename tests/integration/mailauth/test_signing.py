"""DKIM signing of mail leaving the organisation, checked by dkimpy against the DNS records.

A user's message goes out by MX (the lab's DNS server names an aiosmtpd sink on loopback as
outside.test's MX); the sink's copy must carry an RSA and an Ed25519 signature for our
domain, both verifying against the records `dkim_public_records` says to publish. A message
whose From is not one of our domains leaves unsigned.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import dns.nameserver
import dns.resolver
import pytest
from aiosmtpd.controller import Controller
from tests.support.edgesite import DOMAIN, EdgeSite, edge_site
from tests.support.org import free_port

SITE = "127.33.1.10"
DNS = "127.33.1.11"
SINK = "127.33.1.12"
USER = "127.33.1.20"  # a client the site trusts to relay (as its users' submission)


class _Sink:
    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(envelope.original_content)
        return "250 2.0.0 sunk"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EdgeSite, _Sink]]:
    sink = _Sink()
    port = free_port(SINK)
    controller = Controller(sink, hostname=SINK, port=port)
    controller.start()

    def tune(config: Any) -> Any:
        smtp = dataclasses.replace(
            config.smtp, outbound_port=port, trusted_networks=(f"{USER}/32",)
        )
        return dataclasses.replace(config, smtp=smtp)

    root = tmp_path_factory.mktemp("signing")
    try:
        with edge_site(root, SITE, DNS, ["outside.test"], tune=tune) as site:
            site.dns.add("outside.test", "MX", "10 mx.outside.test.")
            site.dns.add("mx.outside.test", "A", SINK)
            site.publish_own_records()
            yield site, sink
    finally:
        controller.stop()


def _dns_of(site: EdgeSite) -> Any:
    """dkimpy's `dnsfunc`, asking the lab's DNS server over the network."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(site.dns.address, site.dns.port)]

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        return b"".join(next(iter(answer)).strings)

    return lookup


def _arrived(sink: _Sink, subject: str) -> bytes:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for message in sink.received:
            if f"Subject: {subject}\r\n".encode() in message:
                return message
        time.sleep(0.05)
    raise AssertionError(f"{subject} never reached the outside")


def _message(sender: str, subject: str) -> bytes:
    return (
        f"From: John Smith <{sender}>\r\nTo: <friend@outside.test>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@sitea>\r\n\r\nhello out there\r\n.line with a dot\r\n"
    ).encode()


def test_signing_outgoing_rsa_and_ed25519_verify(setup: tuple[EdgeSite, _Sink]) -> None:
    """Mail from our domain to the Internet carries two signatures that dkimpy verifies."""
    site, sink = setup
    sender = f"jsmith@{DOMAIN}"
    assert site.send(USER, sender, ["friend@outside.test"], _message(sender, "out1"))[0] == 250
    received = _arrived(sink, "out1")
    verifier = dkim.DKIM(received)
    signatures = [v for k, v in verifier.headers if k.lower() == b"dkim-signature"]
    assert len(signatures) == 2
    assert b"a=rsa-sha256" in signatures[0]
    assert b"a=ed25519-sha256" in signatures[1]
    assert f"d={DOMAIN}".encode() in signatures[0]
    lookup = _dns_of(site)
    assert verifier.verify(0, dnsfunc=lookup)
    assert verifier.verify(1, dnsfunc=lookup)


def test_signing_foreign_from_left_unsigned(setup: tuple[EdgeSite, _Sink]) -> None:
    """A From that is not one of the organisation's domains is not signed."""
    site, sink = setup
    sender = "someone@elsewhere.test"
    assert site.send(USER, sender, ["friend@outside.test"], _message(sender, "out2"))[0] == 250
    assert b"DKIM-Signature" not in _arrived(sink, "out2")


def test_signing_keys_made_at_init(setup: tuple[EdgeSite, _Sink], tmp_path: Path) -> None:
    """`sitemail init` made the site's key files, private to the server's user."""
    site, _ = setup
    keys = sorted((site.service.config.data_dir / "keys" / "dkim").glob("*.pem"))
    assert [k.name for k in keys] == ["sitea.ed25519.pem", "sitea.rsa.pem"]
    assert all(k.stat().st_mode & 0o077 == 0 for k in keys)


def test_edge_skips_trusted_clients(setup: tuple[EdgeSite, _Sink]) -> None:
    """A trusted client (like a sibling site's server) is not judged: our own From domain,
    unauthenticated by SPF or DKIM, is delivered, without an Authentication-Results field."""
    site, _ = setup
    sender = f"ceo@{DOMAIN}"
    body = _message(sender, "inside").replace(b"friend@outside.test", f"jsmith@{DOMAIN}".encode())
    assert site.send(USER, sender, [f"jsmith@{DOMAIN}"], body)[0] == 250
    deadline = time.monotonic() + 20
    while not (stored := [m for m in site.folder("jsmith") if b"Subject: inside\r\n" in m]):
        assert time.monotonic() < deadline, "not delivered"
        time.sleep(0.05)
    assert b"Authentication-Results" not in stored[0]
