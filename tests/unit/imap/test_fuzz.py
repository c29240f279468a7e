"""Fuzz (Hypothesis, bounded): the command parser and the message parser never fail.

A few hundred inputs each in the suite; `scripts/fuzz_imap.py` runs the same properties for a
million inputs and reports what it tried and what failed.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from tests.support.imapfuzz import check_command, check_message, commands, messages

BOUNDED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@BOUNDED
@given(commands())
def test_fuzz_command_parser_answers_every_line(line: bytes) -> None:
    """Any line parses into a command or an InvalidCommand (BAD/NO), never an exception."""
    check_command(line)


@BOUNDED
@given(messages())
def test_fuzz_message_parser_answers_every_fetch(raw: bytes) -> None:
    """ENVELOPE, BODYSTRUCTURE, sections, BINARY and SEARCH of any message never raise."""
    check_message(raw)
