"""Crash test of a site of two servers sharing one queue on PostgreSQL: `kill -9` under load.

Issue 21's acceptance: ServerA and ServerA2 (127.35.2.1 and .2, real `sitemail serve`
processes on one private PostgreSQL database) take a bounded load of SMTP clients, half
sending to each, while they are killed with SIGKILL in turn, 20 times in all, and started
again. Then ServerA is killed one last time and left dead: ServerA2 alone must deliver
everything, including what ServerA had claimed (after the claim's lease, 3 s here). The
audit is test_crash.py's: every 250 delivered exactly once, a DATA without reply all or
nothing, nothing refused delivered, the queue drained. Seeded (SITEMAIL_CRASH_SEED).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from tests.integration.test_crash import (
    DOMAIN,
    GROUP,
    GROUP_MEMBERS,
    MAILBOXES,
    SEED,
    audit,
    choose_recipients,
    judge,
    queued_recipients,
)
from tests.support.crash import Ledger, Load, Outcome, client_loop, only_smtp
from tests.support.processes import ServeProcess, free_port, wait_until

from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # 22 starts of a server under load

HOSTS = ("127.35.2.1", "127.35.2.2")
KILLS = 20  # alternating servers
CLIENTS = 4  # two per server
LEASE = 3.0
DRAIN_TIMEOUT = 60.0


def make_site(root: Path, url: str, ports: tuple[int, int]) -> tuple[Path, Path]:
    """SiteA on `url` with its mailboxes and group, and its second server; SMTP only."""
    first, second = root / "ServerA", root / "ServerA2"
    service = AdminService.init(
        first,
        org="ExchangeORG",
        site="SiteA",
        server="ServerA",
        domain=DOMAIN,
        listen=[HOSTS[0]],
        database_url=url,
    )
    try:
        for alias in MAILBOXES:
            service.add_recipient(ObjectKind.MAILBOX, alias, display_name=alias.title())
        group = service.add_recipient(ObjectKind.GROUP, GROUP, display_name="Team")
        service.set_members(group.alias, list(GROUP_MEMBERS), [])
        service.join(second, server="ServerA2", listen=[HOSTS[1]]).close()
    finally:
        service.close()
    for data_dir, port in zip((first, second), ports, strict=True):
        only_smtp(data_dir, port)
        config = data_dir / "sitemail.toml"
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace("[queue]\n", f"[queue]\nclaim_lease = {LEASE}\n", 1))
    return first, second


def test_crash_two_servers_kill_9_alternating_loses_and_duplicates_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    """20 kills -9 alternating between two servers of one site: 0 lost, 0 delivered twice;
    the survivor delivers what the dead one had claimed once its lease is over."""
    rng = random.Random(SEED)
    ports = (free_port(HOSTS[0]), free_port(HOSTS[1]))
    dirs = make_site(tmp_path, pg_url, ports)
    servers = [ServeProcess(d, tmp_path) for d in dirs]
    ledger = Ledger()
    stop = threading.Event()
    clients = [
        threading.Thread(
            target=client_loop,
            args=(
                Load(HOSTS[n % 2], ports[n % 2], stop, ledger, SEED, choose_recipients, f"s{n}"),
                n,
            ),
            name=f"load-{n}",
            daemon=True,
        )
        for n in range(CLIENTS)
    ]
    started = time.monotonic()
    drained_after = 0.0
    try:
        for server in servers:
            server.start()
        for thread in clients:
            thread.start()
        for kill in range(KILLS):
            target = ledger.count(Outcome.ACKED) + rng.randint(5, 40)
            deadline = time.monotonic() + 8
            while ledger.count(Outcome.ACKED) < target and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
            victim = servers[kill % 2]
            victim.kill()
            time.sleep(rng.uniform(0, 0.3))
            victim.start()
        time.sleep(rng.uniform(0.1, 0.5))
        servers[0].kill()  # for good: ServerA2 must finish ServerA's work
        dead_at = time.monotonic()
        stop.set()
        for thread in clients:
            thread.join(timeout=15)
            assert not thread.is_alive(), f"{thread.name} did not stop"
        wait_until(
            lambda: not queued_recipients(dirs[1]), DRAIN_TIMEOUT, "queue drained by ServerA2"
        )
        drained_after = time.monotonic() - dead_at
        assert servers[1].stop() == 0, "graceful stop failed"
    finally:
        stop.set()
        for server in servers:
            server.cleanup()
    elapsed = time.monotonic() - started

    result = audit(dirs[1], ledger)
    by_outcome = Counter(a.outcome for a in ledger.attempts)
    summary = (
        f"seed {SEED}: {KILLS} kills, {len(ledger.attempts)} attempts {dict(by_outcome)},"
        f" drained {drained_after:.1f} s after ServerA's death (lease {LEASE} s), {elapsed:.1f} s"
    )
    print(summary)
    lost, duplicated, partial, wrongly = judge(ledger, result)
    assert by_outcome[Outcome.ACKED] >= KILLS * 5, f"too little load to mean anything: {summary}"
    assert not lost, f"LOST after 250 ({summary}): {lost}"
    assert not duplicated, f"DUPLICATED ({summary}): {duplicated}"
    assert not partial, f"delivered to some recipients only ({summary}): {partial}"
    assert not wrongly, f"delivered though refused or unsent ({summary}): {wrongly}"
    assert not result.problems, f"inconsistent store ({summary}): {result.problems}"
    assert not result.still_queued, f"queue not drained: {sorted(result.still_queued)[:20]}"
    problems = [p for s in servers for p in s.problems()]
    assert not problems, "errors in the server logs:\n" + "\n".join(problems)
