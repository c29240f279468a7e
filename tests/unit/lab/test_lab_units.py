"""The lab's pure parts: its addresses, its zone and what it says when it cannot bind."""

from __future__ import annotations

import errno

import pytest

from sitemail.lab.cli import _parse_zone
from sitemail.lab.lab import _bind_advice, lab_sites, zone_text


def test_lab_sites_keep_the_articles_host_numbers_on_another_net() -> None:
    assert [s.address for s in lab_sites()] == ["127.10.10.10", "127.10.10.15", "127.10.10.20"]
    assert [s.address for s in lab_sites("127.10.91")] == [
        "127.10.91.10",
        "127.10.91.15",
        "127.10.91.20",
    ]


def test_zone_has_the_company_mx_and_each_sites_mx_and_a_record() -> None:
    zone = zone_text(lab_sites())
    assert "@ IN MX 10 servera.sitea.example.com." in zone
    assert "siteb.example.com. IN MX 10 serverb.siteb.example.com." in zone
    assert "serverc.sitec.example.com. IN A 127.10.10.20" in zone


def test_bind_advice_says_what_to_change() -> None:
    busy = OSError(errno.EADDRINUSE, "Address already in use")
    assert "--smtp-port" in _bind_advice("127.10.10.10", 25, "SiteA", "SiteA", busy)
    denied = OSError(errno.EACCES, "Permission denied")
    advice = _bind_advice("127.10.10.53", 53, "the DNS server", "dns", denied)
    assert "below 1024 need root" in advice
    assert "--dns-port 5353" in advice
    missing = OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
    assert "ifconfig lo0 alias 127.10.10.15" in _bind_advice(
        "127.10.10.15", 25, "SiteB", "SiteB", missing
    )


def test_a_bad_zone_line_is_named_and_nothing_is_half_loaded() -> None:
    good = zone_text(lab_sites())
    assert len(_parse_zone(good)) == 7
    bad = good + "garbage line here !!!\n"
    with pytest.raises(ValueError, match=r"line 10: 'garbage line here !!!'"):
        _parse_zone(bad)
