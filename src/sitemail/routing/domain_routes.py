"""The IMS's E-Mail Domain table: "forward all messages for this domain to host".

One job: answer, as a pure function, which domain route (if any) applies to a recipient
domain, and read/write the "host[:port]" next-hop text such a route carries.

Matching (seed behaviours 5 and 14; KB Q169683, Q190710):
- An entry written ``#example.com`` matches ``example.com`` only (exact), and exact entries
  are checked first.
- Any other entry matches its domain and every subdomain on whole labels: ``sea.com``
  matches ``sea.com`` and ``x.sea.com``, never ``chelsea.com``.
- Among suffix entries the most specific (the one with the most labels) wins, whatever the
  order of the list; between two entries for the same domain the first one listed wins.
- Comparison is case-insensitive and ignores a trailing dot.

A route only names the next hop; the recipient address is kept unchanged (item 14).

Next hops (``parse_nexthop`` / ``format_nexthop``): a host name, an IPv4 address, or an
address in brackets (``[192.0.2.1]``, ``[2001:db8::1]``), optionally followed by ``:port``.
A bare IPv6 address is accepted without a port only (``::1:25`` *is* an address); write
``[::1]:25`` for a port. ``[name]`` is accepted as Postfix spells it and means the name:
relay next hops are never looked up by MX anyway.

Collaborators: none (pure). ``routing.router`` loads the table from the directory and asks
``match_domain_route``; ``delivery.remote`` parses relay next hops with ``parse_nexthop``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DomainRoute", "format_nexthop", "match_domain_route", "parse_nexthop"]

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_MAX_NAME = 253


def _normal_domain(text: str) -> str:
    """Lowercase, without surrounding blanks and without one trailing dot."""
    domain = text.strip().lower()
    return domain[:-1] if domain.endswith(".") else domain


@dataclass(frozen=True, slots=True)
class DomainRoute:
    """One E-Mail Domain entry: mail for ``domain`` goes to ``host`` (``port`` or default).

    ``domain`` is written as the administrator wrote it; a leading ``#`` makes the entry
    an exact match.
    """

    domain: str
    host: str
    port: int | None = None

    @property
    def exact(self) -> bool:
        """Whether this entry matches its domain only (written ``#domain``)."""
        return self.domain.strip().startswith("#")

    @property
    def match_domain(self) -> str:
        """The domain compared against recipients: lowercase, no ``#``, no trailing dot."""
        return _normal_domain(self.domain.strip().removeprefix("#"))

    @property
    def nexthop(self) -> str:
        """The route's next hop as ``host[:port]`` text (see ``format_nexthop``)."""
        return format_nexthop(self.host, self.port)

    def matches(self, domain: str) -> bool:
        """Whether this entry applies to ``domain`` (exactly, or on whole labels)."""
        wanted = _normal_domain(domain)
        mine = self.match_domain
        if not wanted or not mine:
            return False
        if self.exact:
            return wanted == mine
        return wanted == mine or wanted.endswith("." + mine)


def match_domain_route(routes: Iterable[DomainRoute], domain: str) -> DomainRoute | None:
    """The route for ``domain``: an exact (``#``) entry, else the most specific suffix entry.

    List order decides only between entries for the same domain (the first wins).
    """
    candidates = [route for route in routes if route.matches(domain)]
    for route in candidates:
        if route.exact:
            return route
    best: DomainRoute | None = None
    best_labels = 0
    for route in candidates:
        labels = route.match_domain.count(".") + 1
        if labels > best_labels:
            best, best_labels = route, labels
    return best


def _valid_name(name: str) -> bool:
    if not name or len(name) > _MAX_NAME:
        return False
    labels = name.split(".")
    return all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def _port(text: str, nexthop: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"bad port in next hop {nexthop!r}")
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in next hop {nexthop!r}")
    return port


def _host(text: str, nexthop: str) -> str:
    """An IP address (canonical text) or a valid lowercase host name."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = _normal_domain(text)
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"not a host name in next hop {nexthop!r}") from None
    if not _valid_name(name):
        raise ValueError(f"not a host name or IP address in next hop {nexthop!r}")
    return name


def parse_nexthop(nexthop: str) -> tuple[str, int | None]:
    """``"host[:port]"`` -> ``(host, port or None)``; raises ValueError when malformed.

    The host comes back as a canonical IP address (no brackets) or a lowercase name
    without a trailing dot.
    """
    text = nexthop.strip()
    if not text:
        raise ValueError("empty next hop")
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or not inside:
            raise ValueError(f"unbalanced brackets in next hop {nexthop!r}")
        if rest and not rest.startswith(":"):
            raise ValueError(f"junk after ']' in next hop {nexthop!r}")
        port = _port(rest[1:], nexthop) if rest else None
        host = inside.removeprefix("IPv6:").removeprefix("ipv6:")
        return _host(host, nexthop), port
    if text.count(":") > 1:  # a bare IPv6 address: no port possible
        try:
            return str(ipaddress.IPv6Address(text)), None
        except ValueError:
            raise ValueError(
                f"not an IPv6 address in next hop {nexthop!r} (write [address]:port)"
            ) from None
    host, colon, port_text = text.partition(":")
    port = _port(port_text, nexthop) if colon else None
    return _host(host, nexthop), port


def format_nexthop(host: str, port: int | None = None) -> str:
    """``(host, port)`` -> ``"host[:port]"``; IPv6 addresses get brackets when a port follows.

    ``parse_nexthop(format_nexthop(h, p)) == (h, p)`` for every host ``parse_nexthop``
    returns.
    """
    if port is None:
        return host
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"
