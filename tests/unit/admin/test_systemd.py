"""admin/systemd.py: sd_notify datagrams and the journal's priority prefixes."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from sitemail.admin.systemd import _JournalFormatter, notify


def test_notify_sends_the_state_to_the_socket_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path in $NOTIFY_SOCKET gets the state as one datagram; none set: False, nothing sent."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        assert notify("READY=1\nSTATUS=serving")
        assert sock.recv(100) == b"READY=1\nSTATUS=serving"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify("READY=1")


def test_notify_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """ "@name" is the abstract namespace, as systemd writes it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0sitemail-test-notify")
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@sitemail-test-notify")
        assert notify("STOPPING=1")
        assert sock.recv(100) == b"STOPPING=1"


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.CRITICAL, "<2>"),
        (logging.ERROR, "<3>"),
        (logging.WARNING, "<4>"),
        (logging.INFO, "<6>"),
        (logging.DEBUG, "<7>"),
    ],
)
def test_journal_formatter_prefixes_each_line_with_its_priority(level: int, prefix: str) -> None:
    """Each line of a record (a traceback's too) carries the syslog priority of its level."""
    record = logging.LogRecord("sitemail.x", level, __file__, 1, "one\ntwo", None, None)
    assert _JournalFormatter("%(name)s: %(message)s").format(record) == (
        f"{prefix}sitemail.x: one\n{prefix}two"
    )
