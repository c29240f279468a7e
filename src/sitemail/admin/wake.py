"""A nudge from the command line to a running server: "look at your queue now".

One job: the local control channel. A running `sitemail serve` binds a Unix datagram socket in
the abstract namespace (no file, so no path length limit and nothing left behind), named
after its data dir; a CLI command that queued something (`replication request-now`,
`queue retry`, `queue release`) sends one datagram so the server does not wait for its next
poll. Best effort by design: when no server runs, the message simply waits in the queue.
"""

from __future__ import annotations

import hashlib
import socket
import sys
from pathlib import Path

__all__ = ["open_wake_socket", "poke", "wake_name"]


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
    sock.setblocking(False)
    return sock


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
