"""DMARC evaluation: records, organizational domains, alignment, sp= and pct=."""

from __future__ import annotations

import random

from sitemail.mailauth.dmarc import (
    Policy,
    aligned,
    evaluate,
    org_domain,
    parse_record,
    pick_record,
    policy_domains,
)


def test_dmarc_org_domain_from_public_suffix_list() -> None:
    """The organizational domain is one label under the public suffix."""
    assert org_domain("mail.sitea.example.com") == "example.com"
    assert org_domain("a.b.example.co.uk") == "example.co.uk"
    assert policy_domains("sitea.example.com") == ["sitea.example.com", "example.com"]
    assert policy_domains("example.com") == ["example.com"]


def test_dmarc_alignment_relaxed_and_strict() -> None:
    """Relaxed alignment compares organizational domains; strict the names."""
    assert aligned("mail.example.com", "example.com", strict=False)
    assert not aligned("mail.example.com", "example.com", strict=True)
    assert not aligned("example.net", "example.com", strict=False)
    assert not aligned("com", "example.com", strict=False)


def test_dmarc_record_parsing() -> None:
    """p=, sp=, adkim=, aspf= and pct= are read; a record without a valid p= is none."""
    policy = parse_record("v=DMARC1; p=reject; sp=quarantine; adkim=s; pct=50", "example.com")
    assert policy is not None
    assert (policy.p, policy.sp, policy.adkim_strict, policy.aspf_strict, policy.pct) == (
        Policy.REJECT,
        Policy.QUARANTINE,
        True,
        False,
        50,
    )
    assert parse_record("v=DMARC1; p=bogus", "example.com") is None
    assert parse_record("v=spf1 -all", "example.com") is None
    assert pick_record([b"v=DMARC1; p=none", b"v=DMARC1; p=reject"], "example.com") is None


def test_dmarc_verdicts() -> None:
    """Pass on an aligned DKIM or SPF pass; fail takes p=, or sp= for a subdomain."""
    policy = parse_record("v=DMARC1; p=reject; sp=quarantine", "example.com")
    verdict = evaluate(
        "example.com", policy, dkim_pass_domains=["example.com"], spf_pass_domain=None
    )
    assert (verdict.result, verdict.policy) == ("pass", Policy.NONE)
    verdict = evaluate("example.com", policy, dkim_pass_domains=[], spf_pass_domain="evil.test")
    assert (verdict.result, verdict.policy) == ("fail", Policy.REJECT)
    verdict = evaluate("sub.example.com", policy, dkim_pass_domains=[], spf_pass_domain=None)
    assert (verdict.result, verdict.policy) == ("fail", Policy.QUARANTINE)
    verdict = evaluate("example.com", None, dkim_pass_domains=[], spf_pass_domain=None)
    assert verdict.result == "none"


def test_dmarc_pct_zero_softens_policy() -> None:
    """pct=0: no failing message is sampled, so reject becomes quarantine."""
    policy = parse_record("v=DMARC1; p=reject; pct=0", "example.com")
    verdict = evaluate(
        "example.com", policy, dkim_pass_domains=[], spf_pass_domain=None, rng=random.Random(1)
    )
    assert (verdict.result, verdict.policy, verdict.published) == (
        "fail",
        Policy.QUARANTINE,
        Policy.REJECT,
    )
