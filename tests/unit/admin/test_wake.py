"""The CLI's nudge to a running server: a real datagram over the abstract Unix socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sitemail.admin.wake import ask_attempts, open_wake_socket, poke, serve_control, wake_name

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


SYSTEM_PYTHON = "/usr/bin/python3"
_ASK_AS_STRANGER = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("")
s.settimeout(1.0)
s.sendto(b"attempts", "\\0" + sys.argv[1])
try:
    print(s.recv(65536))
except TimeoutError:
    print("no answer")
"""


def _answering(sock: socket.socket, stop: threading.Event) -> None:
    """The server's side: answer questions until `stop` (nothing in flight)."""
    while not stop.is_set():
        serve_control(sock, lambda: None, list)
        time.sleep(0.01)


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON), reason="needs root and a python3"
)
def test_wake_attempts_are_told_only_to_the_servers_own_user(tmp_path: Path) -> None:
    """The same question: answered for root, unanswered for another user (SO_PASSCRED)."""
    sock = open_wake_socket(tmp_path)
    assert sock is not None
    stop = threading.Event()
    server = threading.Thread(target=_answering, args=(sock, stop), daemon=True)
    server.start()
    try:
        assert ask_attempts(tmp_path) == []
        # The system's python (the venv's may lie in a home the other user cannot read),
        # asking as ask_attempts does, by the socket alone.
        stranger = subprocess.run(
            [SYSTEM_PYTHON, "-c", _ASK_AS_STRANGER, wake_name(tmp_path)[1:]],
            user=65534,
            group=65534,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert stranger.stdout.strip() == "no answer"
    finally:
        stop.set()
        server.join()
        sock.close()
