"""Measure Postfix on this machine: the Postfix side of the sitemail benchmark.

Installs Debian's postfix if needed, then, on a private instance bound to a loopback address:

1. discard mode: smtp-source throughput (msgs/s accepted) at each concurrency, and how long
   the queue took to drain afterwards; then asyncio per-message acceptance latency (p50/p99);
2. maildir mode: smtp-source throughput plus delivery-to-Maildir rate (from the first message
   sent to the last one on disk), then latency again.

Each round uses a fresh instance per mode.  With ``--repeat N`` the whole round runs N times
and the median of every figure is printed at the end (the machine may be shared: check the
load average printed first).

Run as root from the repository root (loopback only, bounded counts)::

    .venv/bin/python bench/try_postfix.py                 # 5,000 x 4 KiB at c=10 and c=50
    .venv/bin/python bench/try_postfix.py --repeat 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from _postfix import (
    DEFAULT_DOMAIN,
    LatencyResult,
    PrivatePostfix,
    SourceResult,
    ensure_postfix_installed,
    measure_latency,
    run_smtp_source,
)

SENDER = "loadgen@sender.test"
RECIPIENT = f"bench@{DEFAULT_DOMAIN}"
WARMUP_MESSAGES = 200

Row = dict[str, float]


def _postfix_version() -> str:
    proc = subprocess.run(
        ["/usr/sbin/postconf", "-d", "-h", "mail_version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return proc.stdout.strip() or "unknown"


def _source_text(label: str, res: SourceResult) -> str:
    return (
        f"{label:<8} smtp-source  c={res.concurrency:<3} {res.messages} x {res.size_bytes} B: "
        f"{res.elapsed_s:6.2f} s  {res.msgs_per_s:7.0f} msg/s accepted"
    )


def _latency_text(label: str, res: LatencyResult) -> str:
    return (
        f"{label:<8} latency      c={res.concurrency:<3} {res.messages} x {res.size_bytes} B: "
        f"p50 {res.p50_ms:6.2f} ms  p90 {res.p90_ms:6.2f} ms  p99 {res.p99_ms:6.2f} ms  "
        f"max {res.max_ms:6.2f} ms  ({res.msgs_per_s:.0f} msg/s, {res.errors} errors)"
    )


def _latency_row(res: LatencyResult) -> Row:
    return {
        "concurrency": res.concurrency,
        "messages": res.messages,
        "errors": res.errors,
        "p50_ms": round(res.p50_ms, 3),
        "p90_ms": round(res.p90_ms, 3),
        "p99_ms": round(res.p99_ms, 3),
        "max_ms": round(res.max_ms, 3),
        "msgs_per_s": round(res.msgs_per_s, 1),
    }


class _Round:
    """One pass over both modes and every concurrency; results keyed "mode/kind/c"."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: dict[str, Row] = {}

    def source(self, pf: PrivatePostfix, concurrency: int, messages: int) -> SourceResult:
        return run_smtp_source(
            pf.ip,
            pf.port,
            messages=messages,
            concurrency=concurrency,
            size_bytes=self.args.size,
            recipient=RECIPIENT,
            sender=SENDER,
        )

    def latency(self, pf: PrivatePostfix, concurrency: int) -> LatencyResult:
        return measure_latency(
            pf.ip,
            pf.port,
            messages=self.args.latency_messages,
            concurrency=concurrency,
            size_bytes=self.args.size,
            recipient=RECIPIENT,
            sender=SENDER,
        )

    def discard(self) -> None:
        args = self.args
        with PrivatePostfix(ip=args.ip, port=args.port, mode="discard") as pf:
            self.source(pf, 10, WARMUP_MESSAGES)
            pf.wait_queue_empty(timeout=120)
            for conc in args.concurrency:
                res = self.source(pf, conc, args.messages)
                drain = pf.wait_queue_empty(timeout=600)
                print(f"{_source_text('discard', res)}; queue empty {drain:.2f} s later")
                self.rows[f"discard/source/{conc}"] = {
                    "elapsed_s": round(res.elapsed_s, 3),
                    "msgs_per_s": round(res.msgs_per_s, 1),
                    "drain_s": round(drain, 3),
                }
            for conc in args.concurrency:
                lat = self.latency(pf, conc)
                pf.wait_queue_empty(timeout=600)
                print(_latency_text("discard", lat))
                self.rows[f"discard/latency/{conc}"] = _latency_row(lat)

    def maildir(self) -> None:
        args = self.args
        with PrivatePostfix(ip=args.ip, port=args.port, mode="maildir") as pf:
            self.source(pf, 10, WARMUP_MESSAGES)
            pf.wait_delivered(WARMUP_MESSAGES, timeout=120)
            pf.wait_queue_empty(timeout=120)
            pf.clear_mailboxes()
            for conc in args.concurrency:
                start = time.perf_counter()
                res = self.source(pf, conc, args.messages)
                pf.wait_delivered(args.messages, timeout=600)
                total = time.perf_counter() - start
                pf.wait_queue_empty(timeout=600)
                delivered = pf.delivered_count()
                pf.clear_mailboxes()
                print(
                    f"{_source_text('maildir', res)}; {delivered} in Maildir after {total:.2f} s"
                    f" = {args.messages / total:.0f} msg/s delivered"
                )
                self.rows[f"maildir/source/{conc}"] = {
                    "elapsed_s": round(res.elapsed_s, 3),
                    "msgs_per_s": round(res.msgs_per_s, 1),
                    "delivered_s": round(total, 3),
                    "delivered_per_s": round(args.messages / total, 1),
                }
            for conc in args.concurrency:
                lat = self.latency(pf, conc)
                pf.wait_delivered(lat.messages, timeout=600)
                pf.wait_queue_empty(timeout=600)
                pf.clear_mailboxes()
                print(_latency_text("maildir", lat))
                self.rows[f"maildir/latency/{conc}"] = _latency_row(lat)


def _medians(rounds: list[dict[str, Row]]) -> dict[str, Row]:
    out: dict[str, Row] = {}
    for key in rounds[0]:
        out[key] = {
            name: round(statistics.median(r[key][name] for r in rounds), 3)
            for name in rounds[0][key]
        }
    return out


def _print_medians(medians: dict[str, Row], repeats: int) -> None:
    print(f"median of {repeats} rounds:")
    for key, row in medians.items():
        mode, kind, conc = key.split("/")
        if kind == "source":
            line = f"{mode:<8} smtp-source  c={conc:<3} {row['msgs_per_s']:7.0f} msg/s accepted"
            if "delivered_per_s" in row:
                line += f", {row['delivered_per_s']:.0f} msg/s delivered to Maildir"
        else:
            line = (
                f"{mode:<8} latency      c={conc:<3} p50 {row['p50_ms']:6.2f} ms  "
                f"p99 {row['p99_ms']:6.2f} ms  ({row['msgs_per_s']:.0f} msg/s)"
            )
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--ip", default="127.0.0.77", help="loopback IP to bind (127.0.0.0/8)")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--messages", type=int, default=5000, help="per smtp-source run")
    parser.add_argument("--latency-messages", type=int, default=2000, help="per latency run")
    parser.add_argument("--size", type=int, default=4096, help="body bytes per message")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians printed if > 1")
    parser.add_argument("--json", action="store_true", help="also print one JSON summary line")
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat must be 1..10")

    ensure_postfix_installed()
    load1 = os.getloadavg()[0]
    summary: dict[str, Any] = {
        "postfix": _postfix_version(),
        "cpus": os.cpu_count(),
        "loadavg_1m_at_start": round(load1, 2),
        "size_bytes": args.size,
        "messages": args.messages,
        "latency_messages": args.latency_messages,
    }
    print(
        f"Postfix {summary['postfix']} on {summary['cpus']} CPUs, {args.ip}:{args.port}, "
        f"load average {load1:.2f} at start"
    )
    rounds: list[dict[str, Row]] = []
    for number in range(1, args.repeat + 1):
        if args.repeat > 1:
            print(f"round {number}/{args.repeat}")
        one = _Round(args)
        one.discard()
        one.maildir()
        rounds.append(one.rows)
    summary["rounds"] = rounds
    if args.repeat > 1:
        summary["median"] = _medians(rounds)
        _print_medians(summary["median"], args.repeat)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
