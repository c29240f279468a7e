"""The records of `sitemail dns records`, checked against what DNS answers (for the doctor).

One job: ask the configured name servers (never the machine's resolver) for each record to
publish and say, per name and type, whether what is published does the record's job, and
if not, the line to publish. What "does the job" means, per kind:
- mx: every expected host among the MX targets (some missing: a warning, mail still comes);
- a, ptr: the expected address (host name) among the answers;
- spf: exactly one `v=spf1` TXT (RFC 7208 4.5), whose ip4/ip6 mechanisms cover every
  expected address and which ends in -all or ~all;
- dkim: a TXT with the same public key (p=);
- dmarc: one `v=DMARC1` TXT; another policy (p=) or report address than configured is a
  warning (the published one is what receivers apply).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from sitemail.admin.dnsrecords import PublishedRecord

__all__ = ["RecordVerdict", "Status", "check_records", "judge"]


class Status(StrEnum):  # the doctor's levels, by value
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class RecordVerdict:
    status: Status
    name: str
    rtype: str
    kind: str
    message: str
    fix: str = ""  # the zone-file line(s) to publish


class _LookupFailedError(Exception):
    """The name servers did not answer (timeout, SERVFAIL, REFUSED): nothing can be told."""


def _resolver(nameservers: Sequence[tuple[str, int]], timeout: float) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)  # never /etc/resolv.conf
    resolver.nameservers = [dns.nameserver.Do53Nameserver(a, p) for a, p in nameservers]
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.cache = None
    return resolver


async def _answers(resolver: dns.asyncresolver.Resolver, name: str, rtype: str) -> list[str]:
    """The published data of `name`/`rtype` (TXT: each record's strings joined); [] for none."""
    try:
        answer = await resolver.resolve(
            name, dns.rdatatype.from_text(rtype), raise_on_no_answer=False, search=False
        )
    except dns.resolver.NXDOMAIN:
        return []
    except dns.exception.DNSException as exc:  # timeout, SERVFAIL, REFUSED
        raise _LookupFailedError(str(exc) or type(exc).__name__) from exc
    if answer.rrset is None:
        return []
    if rtype == "TXT":
        return [b"".join(rd.strings).decode("utf-8", "replace") for rd in answer.rrset]
    return [rd.to_text().lower() for rd in answer.rrset]


async def check_records(
    records: Sequence[PublishedRecord],
    nameservers: Sequence[tuple[str, int]],
    query_timeout: float,
) -> list[RecordVerdict]:
    """One verdict per (name, type, kind) of `records`, in their order."""
    resolver = _resolver(nameservers, query_timeout)
    groups: dict[tuple[str, str, str], list[PublishedRecord]] = {}
    for record in records:
        groups.setdefault((record.name, record.rtype, record.kind), []).append(record)

    async def one(expected: list[PublishedRecord]) -> RecordVerdict:
        first = expected[0]
        try:
            found = await _answers(resolver, first.name, first.rtype)
        except _LookupFailedError as exc:
            lines = "\n".join(r.zone_line() for r in expected)
            return _verdict(
                Status.ERROR, first, f"the name servers did not answer ({exc})",
                f"{lines}\n(in the zone that holds the name; if it is published, check that "
                "the name servers answer for it, or correct [dns] nameservers in sitemail.toml)",
            )  # fmt: skip
        return judge(expected, found)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(expected)) for expected in groups.values()]
    return [task.result() for task in tasks]


def judge(expected: Sequence[PublishedRecord], found: list[str]) -> RecordVerdict:
    """What `found` (the published data of one name and type) says of the `expected` records
    of one kind there; the fix is their zone lines."""
    fix = "\n".join(r.zone_line() for r in expected)
    return _JUDGES[expected[0].kind](expected[0], list(expected), found, fix)


def _verdict(status: Status, record: PublishedRecord, message: str, fix: str = "") -> RecordVerdict:
    what = f"{record.kind.upper()} {record.name}"
    return RecordVerdict(status, record.name, record.rtype, record.kind, f"{what}: {message}", fix)


def _missing(record: PublishedRecord, fix: str) -> RecordVerdict:
    return _verdict(Status.ERROR, record, f"no {record.rtype} record published", fix)


def _judge_mx(
    first: PublishedRecord, expected: list[PublishedRecord], found: list[str], fix: str
) -> RecordVerdict:
    hosts = {r.value.split()[1] for r in expected}
    published = {f.split()[1] for f in found if len(f.split()) == 2}
    if not published:
        return _missing(first, fix)
    absent = sorted(hosts - published)
    if len(absent) == len(hosts):
        return _verdict(
            Status.ERROR,
            first,
            f"MX {', '.join(sorted(published))}, not {', '.join(sorted(hosts))}",
            fix,
        )
    if absent:
        return _verdict(
            Status.WARNING,
            first,
            f"MX lacks {', '.join(absent)}: mail comes in, but not there when the others are down",
            fix,
        )
    return _verdict(Status.OK, first, f"MX {', '.join(sorted(hosts))}")


def _judge_exact(
    first: PublishedRecord, expected: list[PublishedRecord], found: list[str], fix: str
) -> RecordVerdict:
    wanted = {r.value.lower() for r in expected}
    if not found:
        return _missing(first, fix)
    absent = sorted(wanted - set(found))
    if absent:
        return _verdict(
            Status.ERROR,
            first,
            f"{first.rtype} is {', '.join(sorted(found))}, not {', '.join(absent)}",
            fix,
        )
    return _verdict(Status.OK, first, f"{first.rtype} {', '.join(sorted(wanted))}")


def _spf_covers(record: str, addresses: list[str]) -> list[str]:
    """The expected addresses `record`'s ip4/ip6 mechanisms do not cover."""
    networks = []
    for term in record.split()[1:]:
        mechanism, _, value = term.lstrip("+").partition(":")
        if mechanism in ("ip4", "ip6") and value:
            try:
                networks.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                continue
    return [
        a
        for a in addresses
        if not any(ipaddress.ip_address(a) in n for n in networks)  # other version: False
    ]


def _judge_spf(
    first: PublishedRecord, expected: list[PublishedRecord], found: list[str], fix: str
) -> RecordVerdict:
    spf = [f for f in found if f.lower().startswith("v=spf1")]
    if not spf:
        return _missing(first, fix)
    if len(spf) > 1:
        return _verdict(
            Status.ERROR, first, f"{len(spf)} SPF records: receivers fail them all (RFC 7208 4.5)",
            f"keep one: {fix}",
        )  # fmt: skip
    wanted = [t.partition(":")[2] for t in first.value.split() if t.startswith(("ip4:", "ip6:"))]
    uncovered = _spf_covers(spf[0], wanted)
    if uncovered:
        return _verdict(
            Status.ERROR,
            first,
            f'"{spf[0]}" does not list {", ".join(uncovered)}: its mail fails SPF',
            fix,
        )
    if spf[0].split()[-1] not in ("-all", "~all"):
        return _verdict(
            Status.WARNING, first, f'"{spf[0]}" does not end in -all: anyone may send as it', fix
        )
    return _verdict(Status.OK, first, f'"{spf[0]}"')


def _tags(text: str) -> dict[str, str]:
    tags = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = "".join(value.split())
    return tags


def _judge_dkim(
    first: PublishedRecord, expected: list[PublishedRecord], found: list[str], fix: str
) -> RecordVerdict:
    key = _tags(first.value).get("p", "")
    if not found:
        return _missing(first, fix)
    if any(_tags(f).get("p") == key for f in found):
        return _verdict(Status.OK, first, f"the key of {first.site}'s selector is published")
    return _verdict(
        Status.ERROR, first, f"publishes another key than {first.site}'s: its signatures fail", fix
    )


def _judge_dmarc(
    first: PublishedRecord, expected: list[PublishedRecord], found: list[str], fix: str
) -> RecordVerdict:
    dmarc = [f for f in found if f.replace(" ", "").upper().startswith("V=DMARC1")]
    if not dmarc:
        return _missing(first, fix)
    if len(dmarc) > 1:
        return _verdict(
            Status.ERROR, first, f"{len(dmarc)} DMARC records: receivers ignore them all", fix
        )
    wanted, published = _tags(first.value), _tags(dmarc[0])
    differ = [k for k in ("p", "rua") if wanted.get(k, "") != published.get(k, "")]
    if differ:
        return _verdict(
            Status.WARNING,
            first,
            f'"{dmarc[0]}" differs from [dns] dmarc_* in {", ".join(differ)}',
            f"{fix} (or change [dns] dmarc_policy / dmarc_rua)",
        )
    return _verdict(Status.OK, first, f'"{dmarc[0]}"')


_JUDGES = {
    "mx": _judge_mx,
    "a": _judge_exact,
    "ptr": _judge_exact,
    "spf": _judge_spf,
    "dkim": _judge_dkim,
    "dmarc": _judge_dmarc,
}
