"""The CLI's nudge to a running server: a real datagram over the abstract Unix socket."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sitemail.admin.wake import open_wake_socket, poke

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def test_wake_poke_reaches_the_server_of_that_data_dir_only(tmp_path: Path) -> None:
    """`poke(D)` is received by the socket `serve --data-dir D` opened, not by another's."""
    ours, theirs = tmp_path / "a", tmp_path / "b"
    sock, other = open_wake_socket(ours), open_wake_socket(theirs)
    assert sock is not None
    assert other is not None
    try:
        assert open_wake_socket(ours) is None  # a second server on the same data dir: no socket
        assert poke(ours)
        assert sock.recv(64) == b"wake"
        with pytest.raises(BlockingIOError):
            other.recv(64)
    finally:
        sock.close()
        other.close()
    assert not poke(ours)  # nobody listening: the caller is told, nothing fails
