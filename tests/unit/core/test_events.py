"""The event catalogue: documented, and every log line it writes reads back as its event."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sitemail.core.events import (
    CATALOGUE,
    Event,
    LogFormatter,
    QueueDeferred,
    emit,
    listening,
    parse_text,
    render_text,
)

DOCS = Path(__file__).resolve().parents[3] / "docs" / "events.md"

_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "str": st.text(),
    "int": st.integers(),
    "float": st.floats(allow_nan=False, allow_infinity=False),
    "bool": st.booleans(),
}


@st.composite
def events(draw: st.DrawFn) -> Event:
    cls = draw(st.sampled_from(sorted(CATALOGUE.values(), key=lambda c: c.key())))
    values = {
        f.name: draw(_VALUES[str(f.type)])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    }
    return cls(**values)


def test_events_every_one_is_documented_with_its_fields() -> None:
    """docs/events.md has a row per event, naming each of its fields."""
    text = DOCS.read_text(encoding="utf-8")
    rows = {
        m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+\.\w+)` \|([^\n]*)$", text, re.M)
    }
    assert set(rows) == set(CATALOGUE)
    for key, cls in CATALOGUE.items():
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            assert f"`{f.name}`" in rows[key], (key, f.name)


@given(events())
def test_events_text_line_parses_back(event: Event) -> None:
    """Any event's text line, whatever its values hold, reads back as the same event."""
    line = "2026-12-07 21:00:00,000 INFO sitemail.queue: " + render_text(event)
    assert parse_text(line) == event


@given(events())
def test_events_json_line_carries_every_field(event: Event) -> None:
    """A JSON log line is one object: the event's key and each field with its value."""
    record = logging.LogRecord("sitemail.x", logging.INFO, __file__, 1, "%s", ("m",), None)
    record.sitemail_event = event
    data = json.loads(LogFormatter(as_json=True).format(record))
    assert data["event"] == event.key()
    assert {k: data[k] for k in event.fields()} == event.fields()


def test_events_listener_hears_only_its_own_context() -> None:
    """A listener gets the events emitted inside its `listening` block, none after."""
    heard: list[Event] = []
    event = QueueDeferred("Q1", "a@b.test", "relay 192.0.2.1:25", "4.4.1", 300.0)
    with listening(heard.append):
        emit(event)
    emit(event)
    assert heard == [event]


def test_events_plain_line_is_not_an_event() -> None:
    """A line of no catalogued event is refused with ValueError, not misread."""
    for line in ("INFO sitemail: ready", "queue.deferred queue_id=Q1"):
        try:
            parse_text(line)
        except ValueError:
            continue
        raise AssertionError(f"{line!r} parsed")
