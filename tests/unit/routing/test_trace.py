"""The hop trace: its signature proves a sibling site's origin only for what that site sent,
and its reader never raises on hostile headers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from sitemail.replication.keys import PublicKey, SiteKey
from sitemail.routing.trace import (
    SIGNATURE_EXTRA,
    Origin,
    content_digest,
    read_trace,
    signed_trace_field,
    trace_field,
    trace_sites,
    verified_origin,
)

KEY_A = SiteKey(Ed25519PrivateKey.generate())
KEY_OTHER = SiteKey(Ed25519PrivateKey.generate())
CONTENT = b"Received: from x by servera\r\nSubject: hi\r\nMessage-ID: <1@a>\r\n\r\nbody\r\n"
RECEIVED = b"Received: from servera.sitea.example.com (127.0.0.1)\r\n\tby serverb with ESMTP id Q1;\r\n\tMon, 7 Dec 2026 18:00:00 +0000\r\n"
SENDER = "alice@sitea.example.com"
RCPTS = ["Bob@siteb.example.com", "carol@siteb.example.com"]


def _sent(
    *,
    key: SiteKey = KEY_A,
    site: str = "SiteA",
    to_site: str = "SiteB",
    queue_id: str = "01234567890ABCDEF01",
    sender: str = SENDER,
    recipients: Sequence[str] = RCPTS,
    content: bytes = CONTENT,
) -> bytes:
    """What SiteA's transport sends: the signed field, then the content."""
    field = signed_trace_field(
        site,
        queue_id,
        1795870800.125,
        sign=key.sign,
        to_site=to_site,
        sender=sender,
        recipients=recipients,
        digest=content_digest(content),
    )
    return field + content


def _keys(**known: PublicKey) -> Callable[[str], PublicKey | None]:
    return known.get


def _origin(
    stored: bytes, *, sender: str = SENDER, recipients: Sequence[str] = RCPTS
) -> Origin | None:
    return verified_origin(
        stored,
        here="SiteB",
        sender=sender,
        recipients=recipients,
        key_for=_keys(SiteA=KEY_A.public),
    )


def test_signed_trace_proves_the_origin_below_the_receivers_received_field() -> None:
    """The receiver's own Received field first, then the signed field: the origin is proven."""
    assert _origin(RECEIVED + _sent()) == Origin("SiteA", "01234567890ABCDEF01")


def test_signed_trace_recipients_compare_without_case_or_order() -> None:
    """The accepted recipients are signed as a set of lower-cased addresses."""
    stored = RECEIVED + _sent()
    assert _origin(stored, recipients=["CAROL@siteb.example.com", "bob@siteb.example.com"])


@pytest.mark.parametrize(
    ("what", "stored", "sender", "recipients"),
    [
        ("other content", RECEIVED + _sent()[:-6] + b"bodY\r\n", SENDER, RCPTS),
        ("another sender", RECEIVED + _sent(), "mallory@outside.test", RCPTS),
        ("fewer recipients", RECEIVED + _sent(), SENDER, RCPTS[:1]),
        ("more recipients", RECEIVED + _sent(), SENDER, [*RCPTS, "dave@siteb.example.com"]),
        ("signed by another key", RECEIVED + _sent(key=KEY_OTHER), SENDER, RCPTS),
        ("made for another site", RECEIVED + _sent(to_site="SiteC"), SENDER, RCPTS),
        ("a site with no key here", RECEIVED + _sent(site="SiteX"), SENDER, RCPTS),
        ("a header above the field", RECEIVED + b"Subject: urgent\r\n" + _sent(), SENDER, RCPTS),
        ("no Received field of ours", _sent(), SENDER, RCPTS),
        ("an unsigned field", RECEIVED + trace_field("SiteA", "Q9", 1.0) + CONTENT, SENDER, RCPTS),
        (
            "a parameter after sig",
            RECEIVED + _sent().replace(b"\r\n", b"; v=7\r\n", 1),
            SENDER,
            RCPTS,
        ),
        (
            "another queue id",
            RECEIVED + _sent().replace(b"id=01234567890ABCDEF01", b"id=01234567890ABCDEF02", 1),
            SENDER,
            RCPTS,
        ),
    ],
)
def test_signed_trace_proves_nothing_for(
    what: str, stored: bytes, sender: str, recipients: list[str]
) -> None:
    """Anything but what the site signed, below our Received field, is not proven."""
    assert _origin(stored, sender=sender, recipients=recipients) is None, what


@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_signed_trace_any_changed_byte_of_the_content_is_not_proven(where: int, flip: int) -> None:
    """No byte of the content below the field can change and keep the proof."""
    sent = bytearray(_sent())
    start = sent.index(b"\r\n") + 2  # the content, below the field
    at = start + where % (len(sent) - start)
    sent[at] ^= flip
    assert _origin(RECEIVED + bytes(sent)) is None


def test_signed_trace_size_is_the_unsigned_size_plus_the_signature() -> None:
    """The transport declares SIZE before it signs: the signature's length is fixed."""
    unsigned = trace_field("SiteA", "01234567890ABCDEF01", 1795870800.125)
    assert len(_sent()) - len(CONTENT) == len(unsigned) + SIGNATURE_EXTRA


def test_signed_trace_still_names_its_site_for_routing() -> None:
    """Routing's reader of the trace skips the signature like any other parameter."""
    assert trace_sites(_sent()) == {"SiteA": 1795870800.125}


def test_trace_sites_reads_each_site_once_with_its_latest_time() -> None:
    """Fields written by two hops, one of them twice: each site with its latest time."""
    head = (
        trace_field("SiteB", "Q2", 200.5)
        + trace_field("SiteA", "Q1", 100.0)
        + trace_field("SiteA", "Q0", 50.0)
    )
    assert trace_sites(head + b"\r\nbody") == {"SiteB": 200.5, "SiteA": 100.0}


def test_trace_sites_ignores_what_it_cannot_read() -> None:
    """Malformed fields, unknown parameters, 8-bit bytes, fields in the body and a header
    without an end are ignored or read, never raised on."""
    head = (
        b"X-Sitemail-Trace: \xff\xfe; at=1\r\n"
        b"X-Sitemail-Trace: SiteA; at=not-a-number\r\n"
        b"X-Sitemail-Trace: " + b"S" * 65 + b"; at=1\r\n"
        b"X-Sitemail-Trace: SiteB; id=Q; v=7; origin=x; at=12.5\r\n"
        + b"X-Sitemail-Trace: SiteC; "
        + b"x" * 990
        + b"\r\n" * 0
        + b"\r\n"
    ) * 300
    assert trace_sites(head + b"\r\nX-Sitemail-Trace: SiteD; at=1\r\n") == {"SiteB": 12.5}
    assert trace_sites(b"X-Sitemail-Trace: SiteE; at=3") == {"SiteE": 3.0}


def test_trace_field_carries_extra_parameters_after_the_standard_three() -> None:
    """`k=v` parameters follow id and at; empty ones are left out."""
    line = trace_field("SiteA", "Q1", 1700000000.5, v="42", origin="")
    assert line == b"X-Sitemail-Trace: SiteA; id=Q1; at=1700000000.500; v=42\r\n"


def test_read_trace_keeps_each_pass_and_ignores_what_it_cannot_parse() -> None:
    """Passes latest first with their parameters (unknown ones kept, odd ones skipped)."""
    content = (
        trace_field("SiteB", "Q2", 2000.0, v="7", sig="abc")
        + b"X-Sitemail-Trace: SiteA; id=Q1; at=1000; future=x y; v=3\r\n"
        + b"X-Sitemail-Trace: SiteZ; id=Q0; at=nan\r\n"
        + b"Subject: hi\r\n\r\nX-Sitemail-Trace: SiteQ; id=Q9; at=9\r\n"
    )
    trace = read_trace(content, arrived=2500.0)
    assert [(h.site, h.at, h.params.get("v")) for h in trace.hops] == [
        ("SiteB", 2000.0, "7"),
        ("SiteA", 1000.0, "3"),
    ]
    assert trace.hops[0].params["sig"] == "abc"
    assert dict(trace) == trace_sites(content) == {"SiteB": 2000.0, "SiteA": 1000.0}
    assert trace.arrived == 2500.0
    assert [h.site for h in trace.passes("SiteA")] == ["SiteA"]


def test_signed_trace_covers_the_directory_version_before_the_signature() -> None:
    """`v=` comes before `sig` and is signed: read back by routing, proven by the receiver."""
    field = signed_trace_field(
        "SiteA",
        "01234567890ABCDEF01",
        1795870800.125,
        sign=KEY_A.sign,
        to_site="SiteB",
        sender=SENDER,
        recipients=RCPTS,
        digest=content_digest(CONTENT),
        params={"v": "42"},
    )
    assert b"; v=42; sig=" in field
    assert read_trace(field + CONTENT).hops[0].params["v"] == "42"
    assert _origin(RECEIVED + field + CONTENT) == Origin("SiteA", "01234567890ABCDEF01")
    tampered = field.replace(b"v=42", b"v=43")
    assert _origin(RECEIVED + tampered + CONTENT) is None
