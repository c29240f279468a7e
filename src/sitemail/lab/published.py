"""The lab's zone file once the sites are set up: the article's records, then what is published.

One job: write `dns.zone` as the article's records (the part a person edits to break and mend
things, kept as it is) followed by a part `lab up` rewrites each time: every record
`sitemail dns records` lists at each site (MX, A, PTR, SPF, DKIM, DMARC), the reverse zone
of the lab's /24 and the lab's Internet (internet.test). A published record the article's
part already holds is left out, so an edit there is the only copy and takes effect.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sitemail.lab.dns_server import parse_zone_text
from sitemail.lab.internet import reverse_zone, zone_lines

__all__ = ["MARKER", "article_part", "write_published_zone"]

MARKER = "; -- published: rewritten by every `sitemail lab up` (edit the lines above instead)"


def article_part(text: str) -> str:
    """The zone file's lines above the published part."""
    head, _, _ = text.partition(MARKER)
    return head.rstrip("\n") + "\n"


def _identity(line: str, origin: str) -> set[tuple[str, str, str]]:
    return {
        (r.name, r.rtype, r.rdata if r.rtype == "TXT" else r.rdata.lower())
        for r in parse_zone_text(line, origin=origin)
    }


def write_published_zone(zone: Path, net: str, published: Iterable[str], company: str) -> int:
    """Rewrite the published part of `zone` with the `published` zone lines; how many."""
    article = article_part(zone.read_text(encoding="utf-8"))
    held = _identity(article, company)
    origin = f"{company}."
    lines = [
        MARKER,
        f"{reverse_zone(net)} IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 60",
        *zone_lines(net),
    ]
    written = 0
    for line in dict.fromkeys(published):
        if not _identity(line, company) <= held:
            lines.append(line)
            written += 1
    zone.write_text(article + "\n".join(lines) + "\n", encoding="utf-8")
    return written
