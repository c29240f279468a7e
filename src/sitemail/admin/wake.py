"""The local control channel between the command line and a running server.

One job: the local control channel. A running `sitemail serve` binds a Unix datagram socket in
the abstract namespace (no file, so no path length limit and nothing left behind), named
after its data dir. Two messages:
- a nudge, "look at your queue now": a CLI command that queued something (`replication
  request-now`, `queue retry`, `queue release`) sends one datagram so the server does not
  wait for its next poll. Best effort by design: when no server runs, the message simply
  waits in the queue.
- a question, "what are your deliveries doing?" (`ask_attempts`, for `queue list` and
  `queue show`): the asker binds an automatic abstract address and the server answers there
  with its attempts in flight as JSON (queue.attempts), within a second or not at all. Only
  a process of the server's own user (or root) is answered: the kernel tells the server who
  asks (SO_PASSCRED), as file modes do for the database the answer comes from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sitemail.queue.attempts import Attempt

__all__ = ["ask_attempts", "open_wake_socket", "poke", "serve_control", "wake_name"]

_ASK_ATTEMPTS = b"attempts"
_MAX_ANSWER = 60_000  # bytes in one datagram (the kernel allows about 200 KB)
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def wake_name(data_dir: Path) -> str:
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:32]
    return f"\0sitemail-wake-{digest}"


def open_wake_socket(data_dir: Path) -> socket.socket | None:
    """The server's end (non-blocking), or None where abstract sockets do not exist."""
    if not sys.platform.startswith("linux"):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(wake_name(data_dir))
    except OSError:
        sock.close()
        return None  # another server on this data dir holds it; it will be woken instead
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # who asks (serve_control)
    sock.setblocking(False)
    return sock


def serve_control(
    sock: socket.socket, wake: Callable[[], None], attempts: Callable[[], Sequence[Attempt]]
) -> None:
    """The server's reader of its control socket (non-blocking): answer each question from
    the server's own user, and wake the queue once for any number of nudges."""
    nudged = False
    while True:
        try:
            data, ancillary, _, asker = sock.recvmsg(64, socket.CMSG_SPACE(_CREDENTIALS.size))
        except OSError:  # BlockingIOError: drained
            break
        if data == _ASK_ATTEMPTS and asker and _same_user(ancillary):
            with contextlib.suppress(OSError):  # the asker gave up: nobody to tell
                sock.sendto(_answer(attempts()), asker)
        elif data != _ASK_ATTEMPTS:
            nudged = True
    if nudged:
        wake()


def _same_user(ancillary: list[tuple[int, int, bytes]]) -> bool:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            _, uid, _ = _CREDENTIALS.unpack(data[: _CREDENTIALS.size])
            return uid in (os.getuid(), 0)
    return False


def _answer(attempts: Sequence[Attempt]) -> bytes:
    """The attempts as JSON, the oldest first, as many as fit in one datagram."""
    entries = [a.to_json() for a in attempts]
    while True:
        payload = json.dumps(entries).encode()
        if len(payload) <= _MAX_ANSWER or not entries:
            return payload
        entries = entries[: len(entries) // 2]


def ask_attempts(data_dir: Path, timeout: float = 1.0) -> list[Attempt] | None:
    """What the deliveries in flight of the server of `data_dir` are doing; None when no
    server answered (none runs, or it did not answer within `timeout`)."""
    if not sys.platform.startswith("linux"):
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind("")  # an automatic abstract address, for the answer
            sock.settimeout(timeout)
            sock.sendto(_ASK_ATTEMPTS, wake_name(data_dir))
            data = sock.recv(_MAX_ANSWER + 4096)
        except OSError:  # no server (ECONNREFUSED), or no answer in time
            return None
    try:
        return [Attempt.from_json(entry) for entry in json.loads(data)]
    except (ValueError, KeyError, TypeError):
        return None


def poke(data_dir: Path) -> bool:
    """Tell the server of `data_dir` to look at its queue; False if none is listening."""
    if not sys.platform.startswith("linux"):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"wake", wake_name(data_dir))
        except OSError:
            return False
    return True
