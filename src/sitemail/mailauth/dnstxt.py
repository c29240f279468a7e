"""DNS for the edge checks: the site's own name servers, asked synchronously, with a budget.

One job: answer the questions SPF (pyspf), DKIM (dkimpy) and DMARC ask, through the name
servers of `[dns] nameservers` (never the machine's /etc/resolv.conf, as routing.resolver),
each lookup bounded by what is left of one message's budget (`[mailauth] dns_timeout`), so
a slow zone costs a message a few seconds at most, never a hung session.

The libraries are synchronous: the whole check of a message runs in one worker thread
(mailauth.edge), which is where these lookups block. pyspf has no resolver parameter: its
module-level `DNSLookup` is pointed once at `spf_lookup`, which asks the `Lookups` of the
check running in the current thread (a context variable); outside a check it fails with
SPF's temperror, never by asking another resolver.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Sequence
from typing import Any

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import spf

__all__ = ["DnsTempError", "Lookups", "caching_resolver", "current", "spf_lookup"]

_CACHE_SIZE = 10_000  # names whose answers are kept (for their TTL)


class DnsTempError(Exception):
    """A lookup timed out or the servers failed (SERVFAIL, REFUSED): try again later."""


def caching_resolver(nameservers: Sequence[tuple[str, int]]) -> dns.resolver.Resolver:
    """One resolver for every check of a server: asks only `nameservers`, and keeps answers
    (positive and negative) for their TTL in an LRU cache of `_CACHE_SIZE` names, so the
    sender domain of a busy correspondent is asked once a TTL, not once a message (as
    OpenDKIM's libunbound does). dnspython's resolver and cache are thread-safe."""
    resolver = dns.resolver.Resolver(configure=False)  # never /etc/resolv.conf
    resolver.nameservers = [dns.nameserver.Do53Nameserver(a, p) for a, p in nameservers]
    resolver.cache = dns.resolver.LRUCache(_CACHE_SIZE)
    return resolver


class Lookups:
    """TXT and address lookups for one message, within one time budget (seconds)."""

    def __init__(self, resolver: dns.resolver.Resolver, budget: float) -> None:
        self._resolver = resolver
        self._deadline = time.monotonic() + budget
        self.count = 0  # lookups asked, for the log

    def _left(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise DnsTempError("the DNS time budget of this message is spent")
        return left

    def rrset(self, name: str, rdtype: str) -> Any:
        """The answer's RRset, or None for NXDOMAIN and no-data; DnsTempError otherwise."""
        if not self._resolver.nameservers:
            raise DnsTempError("no DNS servers configured ([dns] nameservers)")
        left = self._left()
        self.count += 1
        try:
            answer = self._resolver.resolve(
                dns.name.from_text(name),
                rdtype,
                lifetime=left,
                raise_on_no_answer=False,
                search=False,
            )
        except (dns.resolver.NXDOMAIN, dns.name.EmptyLabel, dns.name.LabelTooLong):
            return None
        except dns.exception.Timeout as exc:
            raise DnsTempError(f"DNS timeout looking up {rdtype} {name}") from exc
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"DNS failure looking up {rdtype} {name}: {exc}") from exc
        return answer.rrset

    def txt(self, name: str) -> list[bytes]:
        """Each TXT record at `name`, its strings joined."""
        rrset = self.rrset(name, "TXT")
        return [] if rrset is None else [b"".join(rd.strings) for rd in rrset]

    def dkim_key(self, name: bytes, timeout: float = 5) -> bytes | None:
        """dkimpy's `dnsfunc`: the key record at `name` (the first TXT), or None."""
        del timeout  # the message's budget bounds it instead
        records = self.txt(name.decode("ascii", "replace"))
        return records[0] if records else None


_CURRENT: contextvars.ContextVar[Lookups | None] = contextvars.ContextVar(
    "sitemail_mailauth_lookups", default=None
)


def current() -> contextvars.ContextVar[Lookups | None]:
    """The context variable naming the Lookups of the check running here."""
    return _CURRENT


def spf_lookup(name: str, qtype: str, strict: object = True, timeout: float = 20) -> list[Any]:
    """pyspf's `DNSLookup` over the current check's Lookups (see the module docstring)."""
    del strict, timeout
    lookups = _CURRENT.get()
    if lookups is None:
        raise spf.TempError("DNS: no resolver for this SPF check")
    try:
        rrset = lookups.rrset(name, qtype)
    except DnsTempError as exc:
        raise spf.TempError(f"DNS {exc}") from exc
    out: list[Any] = []
    for rd in rrset or ():
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rd.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rd.preference, rd.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rd.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rd.strings))
    return out


spf.DNSLookup = spf_lookup  # pyspf's one DNS seam is this module-level name
