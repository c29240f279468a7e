"""Exactly once between sites: kill -9 the sending or the receiving site while mail flows.

Acceptance item of issue 16. Two real `sitemail serve` processes, SiteA and SiteB of one
organisation, set up as the article does (replication connectors both ways, each pinning the
other's key; Connected Sites; E-Mail Domain routes to each other's address; SiteA has pulled
SiteB's directory). SMTP clients (threads) send a bounded load to SiteA for one to three of
SiteB's mailboxes; SiteA relays each message to SiteB with a signed trace, by which SiteB
recognises a resend of what it already accepted (queue.dedupe).

- the sending site: SiteA is killed with SIGKILL at seeded random points under load (a
  delivery whose 250 from SiteB it had not recorded yet is sent again after its restart);
- the receiving site: SiteB is killed the same way while SiteA relays to it (a message SiteB
  stored but whose 250 SiteA never read is sent again).
Each time the load then stops, both queues drain, and SiteB's mailboxes are audited:
- every message SiteA acknowledged is in each of its mailboxes exactly once, byte for byte,
  below a signed trace field;
- a message whose DATA got no reply (SiteA died) is in all of its mailboxes once or in none;
- a refused or unsent message is nowhere, and no message is where it was not addressed.
The test prints the figures (messages, kills, lost, duplicated, and the resends SiteB
recognised). Seeded (another seed: SITEMAIL_CRASH_SEED=n); bounded in count and time.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tests.support.crash import (
    Ledger,
    Load,
    Outcome,
    client_loop,
    kill_at_random_points,
    only_smtp,
    queued_count,
)
from tests.support.processes import ServeProcess, free_port, wait_until

from sitemail.admin.service import AdminService
from sitemail.admin.wake import poke
from sitemail.directory import ObjectKind
from sitemail.mailbox import list_messages
from sitemail.store.tables import relay_seen, track_event

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

ADDRESSES = {"SiteA": "127.21.0.1", "SiteB": "127.21.0.2"}
SEED = int(os.environ.get("SITEMAIL_CRASH_SEED", "20261207"))
KILLS = 20
CLIENTS = 4
PAUSE = 0.02  # between two messages of a client: load enough, and restarts not starved
MAILBOXES = ("user0", "user1", "user2", "user3")  # SiteB's
DOMAIN_B = "siteb.example.com"
DRAIN_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0


@dataclass
class Sites:
    a: ServeProcess
    b: ServeProcess
    ports: dict[str, int]


def _init(root: Path, name: str, port: int) -> AdminService:
    data_dir = root / name
    service = AdminService.init(
        data_dir,
        org="ExchangeORG",
        site=name,
        server=f"Server{name[-1]}",
        domain=f"{name.lower()}.example.com",
        listen=[ADDRESSES[name]],
    )
    only_smtp(data_dir, port)
    return service


def _make_sites(root: Path) -> dict[str, int]:
    """Both data dirs, joined as the article joins sites; returns the SMTP ports."""
    ports = {name: free_port(address) for name, address in ADDRESSES.items()}
    services = {name: _init(root, name, port) for name, port in ports.items()}
    try:
        for alias in MAILBOXES:
            services["SiteB"].add_recipient(ObjectKind.MAILBOX, alias, display_name=alias)
        for here, there in (("SiteA", "SiteB"), ("SiteB", "SiteA")):
            service, domain = services[here], f"{there.lower()}.example.com"
            service.replication.add_connector(
                there,
                bridgehead=f"Server{there[-1]}",
                routing_address=domain,
                peer_key=services[there].site_key()[0],
                schedule="never",
            )
            service.routing.add_connected_site(there, domain)
            service.add_domain_route(domain, f"{ADDRESSES[there]}:{ports[there]}")
    finally:
        for service in services.values():
            service.close()
    return ports


def _knows_siteb(data_dir: Path) -> bool:
    service = AdminService.open(data_dir)
    try:
        return {o.alias for o in service.directory.list_objects(ObjectKind.MAILBOX)} >= set(
            MAILBOXES
        )
    finally:
        service.close()


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    """SiteA and SiteB running as processes; SiteA knows SiteB's mailboxes."""
    root = tmp_path_factory.mktemp("between-sites")
    ports = _make_sites(root)
    pair = Sites(ServeProcess(root / "SiteA", root), ServeProcess(root / "SiteB", root), ports)
    try:
        pair.a.start()
        pair.b.start()
        service = AdminService.open(root / "SiteA")
        try:
            service.replication.request_now("SiteB")
        finally:
            service.close()
        poke(root / "SiteA")
        wait_until(lambda: _knows_siteb(root / "SiteA"), 60, "SiteA replicated from SiteB")
        yield pair
        codes = [pair.a.stop(), pair.b.stop()]
        assert codes == [0, 0], f"graceful stops exited {codes}"
    finally:
        pair.a.cleanup()
        pair.b.cleanup()


def choose_recipients(rng: random.Random) -> tuple[tuple[str, ...], frozenset[str]]:
    """One to three of SiteB's mailboxes."""
    chosen = rng.sample(MAILBOXES, rng.choice((1, 1, 2, 3)))
    return tuple(f"{m}@{DOMAIN_B}" for m in chosen), frozenset(chosen)


@dataclass
class Audit:
    copies: dict[str, Counter[str]]  # mailbox -> Message-ID -> copies
    problems: list[str]
    resends: int  # recognised by SiteB ("duplicate" tracking events)
    remembered: int  # SiteB's relay_seen rows


def _audit(data_dir: Path, ledger: Ledger) -> Audit:
    sent = {f"<{a.message_id}@crash.test>": a for a in ledger.attempts}
    copies: dict[str, Counter[str]] = {}
    problems: list[str] = []
    service = AdminService.open(data_dir)
    try:
        for alias in MAILBOXES:
            guid = service.get_recipient(alias).guid
            with service.store.read() as conn:
                stored = list_messages(conn, guid)
            copies[alias] = Counter(m.message_id for m in stored)
            for m in stored:
                attempt = sent.get(m.message_id)
                if attempt is None:
                    continue  # another test's message
                if not m.content.endswith(attempt.content):
                    problems.append(f"{alias}: {m.message_id} is not byte-complete")
                if b"X-Sitemail-Trace: SiteA; id=" not in m.content or b"; sig=" not in m.content:
                    problems.append(f"{alias}: {m.message_id} has no signed trace field")
        with service.store.read() as conn:
            resends = conn.execute(
                select(func.count()).where(track_event.c.event == "duplicate")
            ).scalar_one()
            remembered = conn.execute(select(func.count()).select_from(relay_seen)).scalar_one()
    finally:
        service.close()
    return Audit(copies, problems, resends, remembered)


def _verdicts(ledger: Ledger, audit: Audit) -> tuple[list[str], list[str], list[str]]:
    """(lost, duplicated, wrongly delivered) over this run's messages."""
    lost, duplicated, wrongly = [], [], []
    for a in ledger.attempts:
        key = f"<{a.message_id}@crash.test>"
        found = {m: audit.copies[m][key] for m in MAILBOXES}
        duplicated += [
            f"{a.message_id} ({a.outcome}) x{n} in {m}" for m, n in found.items() if n > 1
        ]
        wrongly += [
            f"{a.message_id} in {m}" for m, n in found.items() if n and m not in a.mailboxes
        ]
        mine = [min(found[m], 1) for m in sorted(a.mailboxes)]
        if a.outcome is Outcome.ACKED and not all(mine):
            lost.append(f"{a.message_id} ({a.queue_id}): {found}")
        elif a.outcome is Outcome.UNKNOWN and len(set(mine)) > 1:
            wrongly.append(f"{a.message_id} (unknown) in some mailboxes only: {found}")
        elif a.outcome in (Outcome.REFUSED, Outcome.UNSENT) and any(mine):
            wrongly.append(f"{a.message_id} ({a.outcome}: {a.reply}) delivered: {found}")
    return lost, duplicated, wrongly


def _kill_under_load(sites: Sites, victim: ServeProcess, tag: str) -> None:
    """Kill `victim` KILLS times under load, drain, audit and print the figures."""
    rng = random.Random(f"{SEED}-{tag}")
    ledger = Ledger()
    stop = threading.Event()
    load = Load(
        ADDRESSES["SiteA"], sites.ports["SiteA"], stop, ledger, SEED, choose_recipients, tag, PAUSE
    )
    clients = [
        threading.Thread(target=client_loop, args=(load, n), name=f"load-{n}", daemon=True)
        for n in range(CLIENTS)
    ]
    started = time.monotonic()
    for thread in clients:
        thread.start()
    try:
        kill_at_random_points(victim, ledger, rng, kills=KILLS, acks=(3, 40), down=0.2)
        time.sleep(rng.uniform(0.2, 0.5))
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=15)
    assert not any(t.is_alive() for t in clients), "a client did not stop"
    for process in (sites.a, sites.b):
        data_dir = process.data_dir
        wait_until(
            lambda d=data_dir: queued_count(d) == 0, DRAIN_TIMEOUT, f"{process.name} drained"
        )
    elapsed = time.monotonic() - started

    audit = _audit(sites.b.data_dir, ledger)
    lost, duplicated, wrongly = _verdicts(ledger, audit)
    by_outcome = Counter(a.outcome.value for a in ledger.attempts)
    summary = (
        f"{victim.name} killed {KILLS} times (seed {SEED}): {len(ledger.attempts)} messages"
        f" {dict(by_outcome)}, lost {len(lost)}, duplicated {len(duplicated)}; resends"
        f" recognised by SiteB so far {audit.resends}; {elapsed:.1f} s, a restart"
        f" {sum(victim.start_times) / len(victim.start_times):.1f} s on average"
    )
    print(summary)
    assert by_outcome[Outcome.ACKED.value] >= KILLS * 3, (
        f"too little load to mean anything: {summary}"
    )
    assert not lost, f"LOST after 250 ({summary}): {lost}"
    assert not duplicated, f"DUPLICATED ({summary}): {duplicated}"
    assert not wrongly, f"delivered wrongly ({summary}): {wrongly}"
    assert not audit.problems, f"stored wrongly ({summary}): {audit.problems}"
    problems = sites.a.problems() + sites.b.problems()
    assert not problems, "errors in the server logs:\n" + "\n".join(problems)


def test_exactly_once_kill_9_of_the_sending_site(sites: Sites) -> None:
    """SiteA killed 20 times while relaying to SiteB: nothing lost, nothing twice at SiteB."""
    _kill_under_load(sites, sites.a, "a")


def test_exactly_once_kill_9_of_the_receiving_site(sites: Sites) -> None:
    """SiteB killed 20 times while SiteA relays to it: nothing lost, nothing twice."""
    _kill_under_load(sites, sites.b, "b")
