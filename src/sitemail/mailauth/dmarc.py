"""DMARC (RFC 7489): the sender domain's policy record, identifier alignment, the verdict.

One job, pure: given the RFC 5322.From domain, the SPF and DKIM results and the policy
record found in DNS, say whether the message passes DMARC and what the policy asks for it.
The organizational domain comes from the Public Suffix List (publicsuffixlist, whose list
ships in the package, refreshed with its releases).

Choices where RFC 7489 leaves room (docs/mailauth.md):
- A record whose p= is missing or invalid is no policy (section 6.6.3 asks to apply p=none
  only when rua= is valid; none either way changes nothing here).
- pct= below 100 samples with the given random source; a message not sampled gets the next
  less strict policy (section 6.6.4: reject becomes quarantine, quarantine becomes none).
- Several DMARC records at one name are no record (section 6.6.3 step 5).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from publicsuffixlist import PublicSuffixList

__all__ = [
    "DmarcPolicy",
    "DmarcVerdict",
    "Policy",
    "aligned",
    "evaluate",
    "org_domain",
    "parse_record",
    "pick_record",
    "policy_domains",
]

_PSL = PublicSuffixList()


class Policy(StrEnum):
    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


_LESS_STRICT = {Policy.REJECT: Policy.QUARANTINE, Policy.QUARANTINE: Policy.NONE}


@dataclass(frozen=True, slots=True)
class DmarcPolicy:
    """A parsed `v=DMARC1` record, and the domain it was found at."""

    domain: str  # where the record is (the From domain or its organizational domain)
    p: Policy
    sp: Policy | None = None
    adkim_strict: bool = False
    aspf_strict: bool = False
    pct: int = 100


@dataclass(frozen=True, slots=True)
class DmarcVerdict:
    """`result` is pass/fail, or none when there is no policy; `policy` is what to apply."""

    result: str
    policy: Policy  # the disposition asked for (none when the message passes)
    published: Policy | None  # p= (or sp=) as published, for the header's comment
    dkim_aligned: bool
    spf_aligned: bool


def org_domain(domain: str) -> str:
    """The organizational domain (RFC 7489 section 3.2) of `domain`, lowercase."""
    domain = domain.lower().rstrip(".")
    return _PSL.privatesuffix(domain) or domain


def aligned(identifier: str, from_domain: str, *, strict: bool) -> bool:
    """Whether an authenticated domain is aligned with the From domain."""
    a, b = identifier.lower().rstrip("."), from_domain.lower().rstrip(".")
    if not a or not b:
        return False
    return a == b if strict else org_domain(a) == org_domain(b)


def _policy(value: str | None) -> Policy | None:
    try:
        return Policy(value.strip().lower()) if value is not None else None
    except ValueError:
        return None


def parse_record(text: str, domain: str) -> DmarcPolicy | None:
    """The record's policy, or None when it is not a usable DMARC record."""
    tags: dict[str, str] = {}
    parts = [p.strip() for p in text.split(";") if p.strip()]
    if not parts or parts[0].replace(" ", "") != "v=DMARC1":
        return None
    for part in parts[1:]:
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    p = _policy(tags.get("p"))
    if p is None:
        return None
    try:
        pct = min(100, max(0, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    return DmarcPolicy(
        domain=domain.lower().rstrip("."),
        p=p,
        sp=_policy(tags.get("sp")),
        adkim_strict=tags.get("adkim", "r").lower() == "s",
        aspf_strict=tags.get("aspf", "r").lower() == "s",
        pct=pct,
    )


def pick_record(records: Sequence[bytes], domain: str) -> DmarcPolicy | None:
    """The one DMARC record among a name's TXT records (none when there are several)."""
    found = [r for r in records if r.lstrip().lower().startswith(b"v=dmarc1")]
    if len(found) != 1:
        return None
    return parse_record(found[0].decode("utf-8", "replace"), domain)


def evaluate(
    from_domain: str,
    policy: DmarcPolicy | None,
    *,
    dkim_pass_domains: Sequence[str],
    spf_pass_domain: str | None,
    rng: random.Random | None = None,
) -> DmarcVerdict:
    """The DMARC verdict for a message (RFC 7489 sections 3.1 and 6.6)."""
    adkim = policy.adkim_strict if policy else False
    aspf = policy.aspf_strict if policy else False
    dkim_ok = any(aligned(d, from_domain, strict=adkim) for d in dkim_pass_domains)
    spf_ok = spf_pass_domain is not None and aligned(spf_pass_domain, from_domain, strict=aspf)
    if policy is None:
        return DmarcVerdict("none", Policy.NONE, None, dkim_ok, spf_ok)
    published = policy.p
    if policy.sp is not None and from_domain.lower().rstrip(".") != policy.domain:
        published = policy.sp  # a subdomain under the organizational domain's record
    if dkim_ok or spf_ok:
        return DmarcVerdict("pass", Policy.NONE, published, dkim_ok, spf_ok)
    applied = published
    if policy.pct < 100 and (rng or random.Random()).randrange(100) >= policy.pct:  # noqa: S311
        applied = _LESS_STRICT.get(published, Policy.NONE)
    return DmarcVerdict("fail", applied, published, dkim_ok, spf_ok)


def policy_domains(from_domain: str) -> list[str]:
    """Where to look for the record: the From domain, then its organizational domain."""
    domain = from_domain.lower().rstrip(".")
    org = org_domain(domain)
    return [domain] if org == domain else [domain, org]
