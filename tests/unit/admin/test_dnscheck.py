"""The judges of the doctor's `records` check and the zone lines of `dns records` (no DNS)."""

from __future__ import annotations

from sitemail.admin.dnscheck import Status, judge
from sitemail.admin.dnsrecords import PublishedRecord

SPF = PublishedRecord(
    "example.com.", "TXT", "v=spf1 ip4:192.0.2.10 ip4:192.0.2.15 ip6:2001:db8::1 -all", "spf"
)
DMARC = PublishedRecord("_dmarc.example.com.", "TXT", "v=DMARC1; p=quarantine", "dmarc")
MX = [
    PublishedRecord("example.com.", "MX", "10 servera.sitea.example.com.", "mx", "SiteA"),
    PublishedRecord("example.com.", "MX", "10 serverb.siteb.example.com.", "mx", "SiteB"),
]


def verdict(records: list[PublishedRecord], found: list[str]) -> tuple[Status, str]:
    judged = judge(records, found)
    return judged.status, judged.message


def test_judge_mx_some_hosts_missing_is_a_warning_none_an_error() -> None:
    """Mail still comes when one MX host is missing; not when none of ours is there."""
    both = ["10 servera.sitea.example.com.", "20 serverb.siteb.example.com."]
    assert verdict(MX, both)[0] is Status.OK  # the preference is the admin's choice
    assert verdict(MX, both[:1])[0] is Status.WARNING
    assert verdict(MX, ["10 mx.elsewhere.test."])[0] is Status.ERROR
    assert verdict(MX, [])[0] is Status.ERROR


def test_judge_spf_covers_addresses_by_network_and_needs_one_record() -> None:
    """A wider ip4/ip6 network covers ours; two SPF records or a missing address fail."""
    wide = "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.provider.test -all"
    assert verdict([SPF], ["some other text", wide])[0] is Status.OK
    assert verdict([SPF], [wide, "v=spf1 -all"])[0] is Status.ERROR
    status, message = verdict([SPF], ["v=spf1 ip4:192.0.2.10 ip6:2001:db8::1 -all"])
    assert status is Status.ERROR
    assert "does not list 192.0.2.15" in message
    assert verdict([SPF], [wide.replace("-all", "+all")])[0] is Status.WARNING
    assert verdict([SPF], [wide.replace("-all", "~all")])[0] is Status.OK


def test_judge_dkim_compares_the_public_key_only() -> None:
    """Spacing and tag order do not matter; another key does."""
    record = PublishedRecord("s._domainkey.example.com.", "TXT", "v=DKIM1; k=rsa; p=AAAB", "dkim")
    assert verdict([record], ["k=rsa;  v=DKIM1; p=AA AB"])[0] is Status.OK
    assert verdict([record], ["v=DKIM1; k=rsa; p=ZZZZ"])[0] is Status.ERROR
    assert verdict([record], [])[0] is Status.ERROR


def test_judge_dmarc_another_policy_is_a_warning_two_records_an_error() -> None:
    """The published policy is the owner's choice; two records make receivers ignore both."""
    assert verdict([DMARC], ["v=DMARC1; p=quarantine"])[0] is Status.OK
    assert verdict([DMARC], ["v=DMARC1; p=none"])[0] is Status.WARNING
    assert verdict([DMARC], ["v=DMARC1; p=none", "v=DMARC1; p=reject"])[0] is Status.ERROR
    assert verdict([DMARC], ["v=spf1 -all"])[0] is Status.ERROR


def test_published_record_zone_line_splits_long_txt_and_escapes_quotes() -> None:
    """TXT strings hold 255 octets at most: longer data becomes several quoted strings."""
    record = PublishedRecord("x.example.", "TXT", 'a"b' + "c" * 300, "spf")
    line = record.zone_line()
    assert line.startswith('x.example. 3600 IN TXT "a\\"b')
    strings = line.split(" IN TXT ")[1].split('" "')
    assert len(strings) == 2
    assert PublishedRecord("h.", "A", "192.0.2.1", "a").zone_line() == "h. 3600 IN A 192.0.2.1"
