"""Benchmark: re-addressing a big site, and looking an address up among a million.

Two figures issue 2 asks for, each on a fresh data dir made with `AdminService.init`:

1. Re-addressing: N mailboxes (default 100,000) are bulk-inserted straight into `dir_object`,
   `proxy_address` and `site_usn` (the rows `Directory.add_recipient` would write, without
   hashing or per-row transactions), then `AdminService.set_addressing("smtp", "@example.com",
   update_recipients=True)` is timed: the template change and every recipient's new primary,
   old primary kept, in one transaction. Target: under 5 s.
2. Lookup: a directory holding P proxy addresses (default 1,000,000: P/2 recipients with a
   primary `@example.com` and a secondary `@sitea.example.com` each) answers `Directory.lookup`
   for L random addresses (default 100,000; half hits in random letter case, half misses).
   Target: a mean under 50 microseconds per lookup.

Run from the repository root:

    .venv/bin/python bench/readdress.py [--mailboxes N] [--proxies P] [--lookups L]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

from sitemail.admin.service import AdminService
from sitemail.directory.objects import new_guid
from sitemail.store.tables import dir_object, proxy_address, site_usn

SITE = "SiteA"
OLD_DOMAIN = "sitea.example.com"
NEW_DOMAIN = "example.com"
READDRESS_TARGET_S = 5.0
LOOKUP_TARGET_US = 50.0
CHUNK = 20_000


def new_site(path: Path) -> AdminService:
    return AdminService.init(
        path,
        org="ExchangeORG",
        site=SITE,
        server="ServerA",
        domain=OLD_DOMAIN,
        listen=["127.10.10.10"],
    )


def mailbox_rows(
    count: int, first_usn: int, now: float, *, readdressed: bool
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The dir_object row and proxy_address rows of `count` mailboxes, as add_recipient makes them.

    `readdressed`: the state after a move to @example.com (new primary, old one kept).
    """
    for i in range(count):
        alias = f"user{i:07d}"
        guid = str(new_guid())  # as add_recipient makes them
        old = f"{alias}@{OLD_DOMAIN}"
        new = f"{alias}@{NEW_DOMAIN}"
        proxies = [f"SMTP:{new}", f"smtp:{old}"] if readdressed else [f"SMTP:{old}"]
        obj = {
            "guid": guid,
            "site": SITE,
            "kind": "mailbox",
            "name": alias,
            "display_name": f"Given{i} Surname{i}",
            "attrs": {"proxies": proxies, "given_name": f"Given{i}", "surname": f"Surname{i}"},
            "usn_created": first_usn + i,
            "usn_changed": first_usn + i,
            "version": 1,
            "is_deleted": False,
            "changed_at": now,
        }
        index = [
            {
                "address_key": p.partition(":")[2].lower(),
                "address": p.partition(":")[2],
                "domain": p.rpartition("@")[2],
                "guid": guid,
                "type": "SMTP",
                "is_primary": p.startswith("SMTP:"),
            }
            for p in proxies
        ]
        yield obj, index


def bulk_insert(service: AdminService, count: int, *, readdressed: bool) -> float:
    """Insert `count` mailboxes in one transaction; returns the seconds taken.

    The rows go to the DBAPI's executemany (statements compiled by SQLAlchemy for the engine's
    dialect, JSON encoded here): setup only, so it may be as fast as the driver allows.
    """
    start = time.perf_counter()
    with service.store.write() as conn:
        first = (
            int(
                conn.execute(
                    update(site_usn)
                    .where(site_usn.c.site == SITE)
                    .values(usn=site_usn.c.usn + count)
                    .returning(site_usn.c.usn)
                ).scalar_one()
            )
            - count
            + 1
        )
        statements = []
        for table in (dir_object, proxy_address):
            compiled = insert(table).compile(dialect=conn.dialect)
            statements.append((str(compiled), itemgetter(*(compiled.positiontup or []))))
        (object_sql, object_values), (proxy_sql, proxy_values) = statements
        objects: list[tuple[Any, ...]] = []
        proxies: list[tuple[Any, ...]] = []
        for obj, index in mailbox_rows(count, first, time.time(), readdressed=readdressed):
            obj["attrs"] = json.dumps(obj["attrs"])
            objects.append(object_values(obj))
            proxies.extend(map(proxy_values, index))
            if len(objects) >= CHUNK:
                conn.exec_driver_sql(object_sql, objects)
                conn.exec_driver_sql(proxy_sql, proxies)
                objects, proxies = [], []
        if objects:
            conn.exec_driver_sql(object_sql, objects)
            conn.exec_driver_sql(proxy_sql, proxies)
    return time.perf_counter() - start


def bench_readdress(workdir: Path, mailboxes: int) -> tuple[float, bool]:
    service = new_site(workdir / "readdress")
    try:
        loaded = bulk_insert(service, mailboxes, readdressed=False)
        print(f"  loaded {mailboxes:,} mailboxes in {loaded:.1f} s (setup, not measured)")
        start, cpu = time.perf_counter(), time.process_time()
        result = service.set_addressing("smtp", "@example.com", update_recipients=True)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        # Check the work was really done: a new primary, the old one kept as a secondary.
        sample = f"user{mailboxes // 2:07d}"
        new = service.directory.lookup(f"{sample}@{NEW_DOMAIN}")
        old = service.directory.lookup(f"{sample}@{OLD_DOMAIN}")
        assert result.updated == mailboxes, result.updated
        assert new is not None, sample
        assert (new.alias, new.is_primary) == (sample, True), new
        assert old is not None, sample
        assert (old.alias, old.is_primary) == (sample, False), old
    finally:
        service.close()
    ok = elapsed < READDRESS_TARGET_S
    print(
        f"re-address {mailboxes:,} mailboxes (@{OLD_DOMAIN} -> @{NEW_DOMAIN}, keep old): "
        f"{elapsed:.2f} s ({mailboxes / elapsed:,.0f} recipients/s, {cpu:.2f} s CPU); "
        f"target < {READDRESS_TARGET_S:.0f} s for 100,000: {'met' if ok else 'MISSED'}"
        + ("" if mailboxes == 100_000 else " (at this size; run the defaults to check it)")
    )
    return elapsed, ok


def random_case(text: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.3 else c for c in text)


def bench_lookup(workdir: Path, proxies: int, lookups: int) -> tuple[float, bool]:
    recipients = proxies // 2
    service = new_site(workdir / "lookup")
    try:
        loaded = bulk_insert(service, recipients, readdressed=True)
        print(
            f"  loaded {recipients:,} mailboxes with {recipients * 2:,} proxy addresses "
            f"in {loaded:.1f} s (setup, not measured)"
        )
        rng = random.Random(2)
        queries: list[tuple[str, bool]] = []
        for _ in range(lookups):
            i = rng.randrange(recipients)
            if rng.random() < 0.5:
                domain = NEW_DOMAIN if rng.random() < 0.5 else OLD_DOMAIN
                queries.append((random_case(f"user{i:07d}@{domain}", rng), True))
            else:
                queries.append((f"nobody{i:07d}@{NEW_DOMAIN}", False))
        lookup = service.directory.lookup
        for address, _ in queries[:1000]:  # warm the pool, the page cache and the statement cache
            lookup(address)
        start = time.perf_counter()
        answers = [lookup(address) for address, _ in queries]
        elapsed = time.perf_counter() - start
        wrong = sum((a is not None) != hit for a, (_, hit) in zip(answers, queries, strict=True))
        assert wrong == 0, f"{wrong} wrong answers"
    finally:
        service.close()
    mean_us = elapsed / lookups * 1e6
    ok = mean_us < LOOKUP_TARGET_US
    hits = sum(hit for _, hit in queries)
    print(
        f"lookup among {recipients * 2:,} proxy addresses: mean {mean_us:.1f} us per "
        f"Directory.lookup over {lookups:,} lookups ({hits:,} hits, {lookups - hits:,} misses); "
        f"target < {LOOKUP_TARGET_US:.0f} us among 1,000,000: {'met' if ok else 'MISSED'}"
        + ("" if recipients * 2 == 1_000_000 else " (at this size; run the defaults to check it)")
    )
    return mean_us, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=100_000, help="mailboxes to re-address")
    parser.add_argument("--proxies", type=int, default=1_000_000, help="proxy addresses held")
    parser.add_argument("--lookups", type=int, default=100_000, help="lookups to time")
    parser.add_argument("--workdir", type=Path, default=None, help="where to build (default: tmp)")
    args = parser.parse_args()

    print("sitemail bench/readdress.py")
    print(
        f"  machine: {platform.machine()}, {os.cpu_count()} CPU(s), Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version} (WAL, synchronous=FULL) "
        f"in a temporary data dir; load average at start {os.getloadavg()[0]:.2f}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="sitemail-bench-", dir=args.workdir))
    try:
        _, readdress_ok = bench_readdress(workdir, args.mailboxes)
        _, lookup_ok = bench_lookup(workdir, args.proxies, args.lookups)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"reproduce: .venv/bin/python bench/readdress.py {' '.join(sys.argv[1:])}".rstrip())
    return 0 if readdress_ok and lookup_ok else 1


if __name__ == "__main__":
    sys.exit(main())
