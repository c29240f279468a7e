"""The lab's zone file with the published part: the article's lines kept, the rest rewritten."""

from __future__ import annotations

from pathlib import Path

from sitemail.lab.dns_server import AuthoritativeResolver, parse_zone_text
from sitemail.lab.lab import lab_sites, zone_text
from sitemail.lab.published import MARKER, write_published_zone

NET = "127.34.9"


def test_published_zone_keeps_the_article_and_skips_what_it_already_holds(tmp_path: Path) -> None:
    """An article record published again is left out, so editing the article's line is the
    only copy; the reverse zone and internet.test come with the published part."""
    zone = tmp_path / "dns.zone"
    article = zone_text(lab_sites(NET))
    zone.write_text(article)
    published = [
        "sitea.example.com. 3600 IN MX 10 servera.sitea.example.com.",  # the article's
        "10.9.34.127.in-addr.arpa. 3600 IN PTR servera.sitea.example.com.",
        'example.com. 3600 IN TXT "v=spf1 ip4:127.34.9.10 -all"',
        'example.com. 3600 IN TXT "v=spf1 ip4:127.34.9.10 -all"',  # from two sites
    ]
    assert write_published_zone(zone, NET, published, "example.com") == 2
    text = zone.read_text()
    assert text.startswith(article)
    below = text.split(MARKER)[1]
    assert "sitea.example.com. 3600 IN MX" not in below
    assert "internet.test. IN MX 10 mx.internet.test." in below
    assert f"mx.internet.test. IN A {NET}.40" in below
    served = AuthoritativeResolver()
    served.add_zone("example.com")
    served.load(parse_zone_text(text))
    assert {z.origin for z in served.zones()} == {
        "example.com.", "internet.test.", "9.34.127.in-addr.arpa.",
    }  # fmt: skip


def test_published_zone_rewrites_only_its_own_part(tmp_path: Path) -> None:
    """A second `lab up` replaces the published part and keeps an edit of the article's."""
    zone = tmp_path / "dns.zone"
    zone.write_text(zone_text(lab_sites(NET)))
    write_published_zone(zone, NET, ['a.example.com. 3600 IN TXT "one"'], "example.com")
    edited = zone.read_text().replace("IN A 127.34.9.15", "IN A 127.34.9.99")
    zone.write_text(edited)
    write_published_zone(zone, NET, ['a.example.com. 3600 IN TXT "two"'], "example.com")
    text = zone.read_text()
    assert "IN A 127.34.9.99" in text
    assert '"two"' in text
    assert '"one"' not in text
    assert text.count(MARKER) == 1
