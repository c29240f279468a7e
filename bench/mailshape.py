"""Benchmark: what the bounds on mail read from outside cost (core.mailshape, issue 19).

Every message accepted on 25, 587 and 465 goes through `check_structure` (in a thread), and
every replication message through it again in the codec. Figures, each the best of a few runs:

1. an ordinary message: 32 MB of 998-octet lines in one text part (the body is never scanned);
2. the worst case: 30 MB made only of lines "--x", each a candidate delimiter looked at in
   Python (refused once 200,000 such lines are seen: the check stays well under a second);
3. nesting at the bound: 100 multiparts inside each other (and 101, refused);
4. a replication answer of 512 objects, as the codec checks it;
5. `read_header` on a submission's header of 50 fields.

Run from the repository root:

    .venv/bin/python bench/mailshape.py [--runs N]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sitemail.core.errors import MalformedMessageError
from sitemail.core.mailshape import check_structure, read_header
from sitemail.replication.codec import MessageType, ReplicationMessage, encode_message
from sitemail.replication.keys import generate_site_key


def best(runs: int, work: Callable[[], object]) -> float:
    """The shortest of `runs` timings of `work`, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        with contextlib.suppress(MalformedMessageError):
            work()
        times.append(time.perf_counter() - start)
    return min(times)


def nested(depth: int) -> bytes:
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    return b"Subject: deep\r\n" + opening + b"\r\nhi\r\n" + closing


def answer() -> bytes:
    key = generate_site_key(Path(tempfile.mkdtemp()))
    objects = [
        {"guid": f"{i:032x}", "name": f"user{i}", "attrs": {"proxies": [f"SMTP:user{i}@a.test"]}}
        for i in range(512)
    ]
    body = {"objects": objects, "more": True}
    message = ReplicationMessage(MessageType.ANSWER, "Org", "SiteA", "SiteB", 1, 2**40, body)
    return encode_message(message, key, sender="a@a.test", recipient="b@b.test", now=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    ordinary = b"Subject: big\r\n\r\n" + (b"A" * 998 + b"\r\n") * 32_000
    dashes = b"Content-Type: multipart/mixed; boundary=z\r\n\r\n" + b"--x\r\n" * 6_000_000
    header = b"".join(b"X-Field-%d: value %d\r\n" % (i, i) for i in range(49))
    header = b"From: Someone <someone@a.test>\r\n" + header + b"\r\nbody\r\n"
    replication = answer()
    print(f"{platform.python_implementation()} {platform.python_version()}, {runs} runs, best")
    figures = [
        ("ordinary 32 MB, one text part", lambda: check_structure(ordinary)),
        ("worst case 30 MB of '--x' lines (refused)", lambda: check_structure(dashes)),
        ("100 nested multiparts", lambda: check_structure(nested(100))),
        ("101 nested multiparts (refused)", lambda: check_structure(nested(101))),
        (f"replication answer, 512 objects, {len(replication)} B", lambda: check_structure(replication)),
        ("read_header, 50 fields", lambda: read_header(header)),
    ]  # fmt: skip
    for name, work in figures:
        seconds = best(runs, work)
        shown = f"{seconds * 1000:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"
        print(f"{name:45} {shown:>12}")


if __name__ == "__main__":
    main()
