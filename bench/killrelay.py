"""Benchmark: extra copies an outside peer receives when a relaying site is killed (issue 16).

One `sitemail serve` process (SiteA on 127.21.2.1) relays, by an E-Mail Domain route, every
message for `outside.test` to an aiosmtpd sink in this process (127.21.2.9) that counts each
Message-ID per recipient. Four SMTP clients send to SiteA (one to three recipients a message,
a 20 ms pause between messages) while SiteA is killed with SIGKILL at seeded random points and
started again; then the queue drains and the sink's counts are compared with the messages
SiteA acknowledged. An outside peer cannot recognise a resend (the trace signature is for the
organisation's sites), so every delivery SiteA had not recorded when it died arrives twice.

Prints: kills, messages (acknowledged), extra copies at the sink, mean restart time. The
reference is the issue's harness: Postfix, 9 duplicates in 156 kills (another machine).
Bounded (a fixed number of kills, every wait has a timeout), loopback only, run from the
repository root (it uses the kill -9 harness of tests/support/crash.py):

    .venv/bin/python bench/killrelay.py              # 20 kills
    .venv/bin/python bench/killrelay.py --kills 40
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.crash import (
    Ledger,
    Load,
    Outcome,
    ServeProcess,
    client_loop,
    free_port,
    kill_at_random_points,
    only_smtp,
    queued_count,
    wait_until,
)

from sitemail.admin.service import AdminService

HOST, SINK = "127.21.2.1", "127.21.2.9"
_MESSAGE_ID = re.compile(rb"Message-ID: <([^>]+)>")


class Sink:
    """The outside peer: counts each Message-ID once per recipient it is given."""

    def __init__(self) -> None:
        self.copies: Counter[str] = Counter()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        del server, session
        match = _MESSAGE_ID.search(envelope.content)
        if match is not None:
            self.copies[match.group(1).decode()] += len(envelope.rcpt_tos)
        return "250 2.0.0 Ok"


def make_site(data_dir: Path, port: int, sink_port: int) -> None:
    service = AdminService.init(
        data_dir,
        org="BenchORG",
        site="SiteA",
        server="ServerA",
        domain="sitea.example.com",
        listen=[HOST],
    )
    try:
        service.add_domain_route("outside.test", f"{SINK}:{sink_port}")
    finally:
        service.close()
    only_smtp(data_dir, port)


def choose(rng: random.Random) -> tuple[tuple[str, ...], frozenset[str]]:
    count = rng.choice((1, 1, 2, 3))
    return tuple(f"u{i}@outside.test" for i in range(count)), frozenset()


def run(kills: int, seed: int, root: Path) -> str:
    sink = Sink()
    controller = Controller(sink, hostname=SINK, port=free_port(SINK))
    controller.start()
    port = free_port(HOST)
    make_site(root / "SiteA", port, controller.port)
    site = ServeProcess(root / "SiteA", root)
    ledger, stop = Ledger(), threading.Event()
    load = Load(HOST, port, stop, ledger, seed, choose, "k", 0.02)
    clients = [threading.Thread(target=client_loop, args=(load, n), daemon=True) for n in range(4)]
    try:
        site.start()
        for thread in clients:
            thread.start()
        kill_at_random_points(
            site, ledger, random.Random(seed), kills=kills, acks=(3, 40), down=0.2
        )
        time.sleep(0.5)
        stop.set()
        for thread in clients:
            thread.join(timeout=15)
        wait_until(lambda: queued_count(root / "SiteA") == 0, 120, "SiteA's queue drained")
        site.stop()
    finally:
        stop.set()
        site.cleanup()
        controller.stop()
    acked = sum(1 for a in ledger.attempts if a.outcome is Outcome.ACKED)
    extra = sum(
        max(0, sink.copies[f"{a.message_id}@crash.test"] - len(a.recipients))
        for a in ledger.attempts
    )
    restart = sum(site.start_times) / len(site.start_times)
    return (
        f"sitemail killed {kills} times (seed {seed}): {len(ledger.attempts)} messages"
        f" ({acked} acknowledged), extra copies at the outside peer {extra}"
        f" ({extra / kills:.2f} a kill); a restart {restart:.1f} s on average\n"
        "reference (issue 16's harness, another machine): Postfix 9 duplicates in 156 kills"
        " (0.06 a kill)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sitemail-killrelay-") as root:
        print(run(args.kills, args.seed, Path(root)))
    print(f"reproduce: .venv/bin/python bench/killrelay.py --kills {args.kills} --seed {args.seed}")


if __name__ == "__main__":
    main()
