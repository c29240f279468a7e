"""SPF, DKIM and DMARC at the Internet edge, through real SMTP and the lab's DNS server.

One site runs for the module; outside senders connect from loopback addresses of this
suite's block (127.33.0.0/16), which is what their SPF records name. Each test uses its own
sender domain, so the records of one do not disturb another.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from tests.support.edgesite import DOMAIN, EdgeSite, edge_site, txt

from sitemail.mailauth.dkimkeys import dkim_public_records, generate_dkim_keys, load_signing_keys

SITE = "127.33.0.10"
DNS = "127.33.0.11"
GOOD_IP = "127.33.0.20"  # the outside senders' SPF names this one
BAD_IP = "127.33.0.21"  # and not this one
RCPT = f"jsmith@{DOMAIN}"
ZONES = ["pass.test", "fail.test", "soft.test", "none.test", "dkim.test", "quar.test", "rej.test"]


@pytest.fixture(scope="module")
def outside_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DKIM key pair of the outside world (files as `sitemail init` makes them)."""
    root = tmp_path_factory.mktemp("outside")
    generate_dkim_keys(root, "out")
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, outside_key: Path) -> Iterator[EdgeSite]:
    root = tmp_path_factory.mktemp("edge")
    with edge_site(root, SITE, DNS, ZONES) as running:
        dns = running.dns
        for domain in ZONES:
            for record in dkim_public_records(outside_key, [domain]):
                dns.add(record.name, "TXT", record.zone_text())
        dns.add("pass.test", "TXT", txt(f"v=spf1 ip4:{GOOD_IP} -all"))
        dns.add("_dmarc.pass.test", "TXT", txt("v=DMARC1; p=reject"))
        dns.add("fail.test", "TXT", txt(f"v=spf1 ip4:{GOOD_IP} -all"))
        dns.add("_dmarc.fail.test", "TXT", txt("v=DMARC1; p=none"))
        dns.add("soft.test", "TXT", txt(f"v=spf1 ip4:{GOOD_IP} ~all"))
        dns.add("dkim.test", "TXT", txt(f"v=spf1 ip4:{GOOD_IP} -all"))
        dns.add("_dmarc.dkim.test", "TXT", txt("v=DMARC1; p=reject"))
        dns.add("quar.test", "TXT", txt(f"v=spf1 ip4:{GOOD_IP} -all"))
        dns.add("_dmarc.quar.test", "TXT", txt("v=DMARC1; p=quarantine"))
        dns.add("rej.test", "TXT", txt(f"v=spf1 ip4:{GOOD_IP} -all"))
        dns.add("_dmarc.rej.test", "TXT", txt("v=DMARC1; p=reject"))
        yield running


def message(sender: str, subject: str, *, extra: str = "") -> bytes:
    return (
        f"From: Someone <{sender}>\r\nTo: <{RCPT}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@test>\r\nDate: Mon, 7 Dec 2026 20:00:00 +0000\r\n{extra}"
        f"\r\nbody of {subject}\r\n"
    ).encode()


def signed(key_dir: Path, domain: str, content: bytes) -> bytes:
    """`content` with a DKIM-Signature (RSA) by the outside key, for `domain`."""
    key = load_signing_keys(key_dir)[0]
    header = dkim.sign(content, key.selector.encode(), domain.encode(), key.private)
    return bytes(header) + content


def results_of(stored: bytes) -> str:
    """The Authentication-Results field our site put on top, unfolded."""
    head = stored.split(b"\r\n\r\n", 1)[0].decode()
    fields = head.replace("\r\n\t", " ").replace("\r\n ", " ").split("\r\n")
    found = [f for f in fields if f.lower().startswith("authentication-results: exchangeorg;")]
    assert len(found) == 1, head
    return found[0]


def wait_delivered(site: EdgeSite, subject: str, folder: str = "INBOX") -> bytes:
    """The stored copy of the message with `subject` in `folder`, once it is there."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for stored in site.folder("jsmith", folder):
            if f"Subject: {subject}\r\n".encode() in stored:
                return stored
        time.sleep(0.05)
    raise AssertionError(f"{subject} never reached {folder}")


def test_edge_spf_pass_dkim_pass_dmarc_pass(site: EdgeSite, outside_key: Path) -> None:
    """An authenticated sender is delivered, with spf, dkim and dmarc pass recorded."""
    body = signed(outside_key, "pass.test", message("a@pass.test", "allpass"))
    assert site.send(GOOD_IP, "a@pass.test", [RCPT], body)[0] == 250
    results = results_of(wait_delivered(site, "allpass"))
    assert "spf=pass smtp.mailfrom=pass.test" in results
    assert "dkim=pass header.d=pass.test header.s=out" in results
    assert "dmarc=pass (p=reject dis=none) header.from=pass.test" in results


def test_edge_spf_fail_recorded(site: EdgeSite) -> None:
    """SPF fail under p=none: delivered, recorded as spf=fail and dmarc=fail."""
    assert site.send(BAD_IP, "a@fail.test", [RCPT], message("a@fail.test", "spffail"))[0] == 250
    results = results_of(wait_delivered(site, "spffail"))
    assert "spf=fail smtp.mailfrom=fail.test" in results
    assert "dkim=none" in results
    assert "dmarc=fail (p=none dis=none)" in results


def test_edge_spf_softfail_and_dmarc_none(site: EdgeSite) -> None:
    """SPF softfail with no DMARC record: delivered, spf=softfail, dmarc=none."""
    assert site.send(BAD_IP, "a@soft.test", [RCPT], message("a@soft.test", "softfail"))[0] == 250
    results = results_of(wait_delivered(site, "softfail"))
    assert "spf=softfail smtp.mailfrom=soft.test" in results
    assert "dmarc=none header.from=soft.test" in results


def test_edge_spf_none(site: EdgeSite) -> None:
    """A domain without SPF, DKIM or DMARC records: delivered, all none."""
    assert site.send(BAD_IP, "a@none.test", [RCPT], message("a@none.test", "spfnone"))[0] == 250
    results = results_of(wait_delivered(site, "spfnone"))
    assert "spf=none smtp.mailfrom=none.test" in results
    assert "dkim=none" in results
    assert "dmarc=none" in results


def test_edge_dkim_pass_rescues_spf_fail(site: EdgeSite, outside_key: Path) -> None:
    """p=reject, SPF fails (forwarded mail) but an aligned DKIM pass: DMARC passes."""
    body = signed(outside_key, "dkim.test", message("a@dkim.test", "dkimpass"))
    assert site.send(BAD_IP, "a@dkim.test", [RCPT], body)[0] == 250
    results = results_of(wait_delivered(site, "dkimpass"))
    assert "spf=fail" in results
    assert "dkim=pass header.d=dkim.test" in results
    assert "dmarc=pass" in results


def test_edge_dkim_fail_altered_body(site: EdgeSite, outside_key: Path) -> None:
    """A signature over another body: dkim=fail; SPF alignment still passes DMARC."""
    body = signed(outside_key, "dkim.test", message("a@dkim.test", "dkimfail"))
    body = body.replace(b"body of dkimfail", b"body of dkimfail, changed")
    assert site.send(GOOD_IP, "a@dkim.test", [RCPT], body)[0] == 250
    results = results_of(wait_delivered(site, "dkimfail"))
    assert "dkim=fail header.d=dkim.test" in results
    assert "spf=pass" in results
    assert "dmarc=pass" in results


def test_edge_dmarc_reject_refused_at_data(site: EdgeSite) -> None:
    """p=reject with neither SPF nor DKIM aligned: 550 5.7.1 at the end of DATA."""
    code, text = site.send(BAD_IP, "a@rej.test", [RCPT], message("a@rej.test", "reject"))
    assert code == 550
    assert "5.7.1" in text
    assert "rej.test" in text


def test_edge_dmarc_quarantine_to_junk(site: EdgeSite) -> None:
    """p=quarantine failing DMARC: accepted and filed in Junk, not INBOX."""
    assert site.send(BAD_IP, "a@quar.test", [RCPT], message("a@quar.test", "quar"))[0] == 250
    results = results_of(wait_delivered(site, "quar", folder="Junk"))
    assert "dmarc=fail (p=quarantine dis=quarantine)" in results
    assert not [m for m in site.folder("jsmith") if b"Subject: quar\r\n" in m]


def test_edge_own_domain_spoof_refused(site: EdgeSite) -> None:
    """From at our own domain, from the Internet, unauthenticated: 550 5.7.1 (no DMARC
    record of ours is published: our policy does not matter)."""
    body = message(f"ceo@{DOMAIN}", "ceofraud")
    code, text = site.send(GOOD_IP, "a@pass.test", [RCPT], body)
    assert code == 550
    assert "5.7.1" in text
    assert DOMAIN in text


def test_edge_own_domain_signed_by_us_accepted(site: EdgeSite) -> None:
    """Our own domain signed with our own published key (mail that left and came back)."""
    site.publish_own_records()
    key = load_signing_keys(site.service.config.data_dir)[0]
    content = message(f"ceo@{DOMAIN}", "ownsigned")
    header = dkim.sign(content, key.selector.encode(), DOMAIN.encode(), key.private)
    assert site.send(BAD_IP, "a@none.test", [RCPT], bytes(header) + content)[0] == 250
    results = results_of(wait_delivered(site, "ownsigned"))
    assert f"dkim=pass header.d={DOMAIN} header.s=sitea" in results


def test_edge_forged_results_removed(site: EdgeSite) -> None:
    """An Authentication-Results with our authserv-id from outside is removed; another
    organisation's stays."""
    extra = (
        "Authentication-Results: exchangeorg; dmarc=pass header.from=none.test\r\n"
        "Authentication-Results: other.example; spf=pass\r\n"
        "X-Sitemail-Quarantine: exchangeorg; forged\r\n"
    )
    body = message("a@none.test", "forged", extra=extra)
    assert site.send(BAD_IP, "a@none.test", [RCPT], body)[0] == 250
    stored = wait_delivered(site, "forged")
    assert results_of(stored).count("dmarc=none") == 1
    assert b"Authentication-Results: other.example; spf=pass" in stored
    assert b"X-Sitemail-Quarantine" not in stored
