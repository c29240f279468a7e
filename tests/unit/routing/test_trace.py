"""The organisation's trace fields read from hostile headers (routing.trace.trace_sites)."""

from __future__ import annotations

from sitemail.routing.trace import trace_field, trace_sites


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
