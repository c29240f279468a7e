"""The hop trace field: written with parameters, read back with those it knows and others."""

from __future__ import annotations

from sitemail.routing.trace import read_trace, trace_field, trace_sites


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
