"""Home-site routing while the sites disagree, as a property over 3 to 5 sites (issue 17).

Each site is a real directory (SQLite, `AdminService`) with the real `Router`, replication's
real `objects_since` / `apply_objects` / `move_aside_lost_claims`, and the real loop guard;
only the transport is fake: replication is a pull of one site's naming context by another,
done whenever Hypothesis says, and a message is a value moved between in-memory queues (a
site hop writes a trace pass with the route's directory version, as the remote transport
does). Hypothesis draws the interleaving: directory changes (create, remove, move between
sites by remove-and-add, rename, the same address created at two sites), pulls, messages
injected into a site's queue (as accepted there, or forwarded by a site that was behind),
queue runs and time. Then every site pulls from every other until nothing changes, and the
queues run, a retry interval apart, until they are empty.

Properties: once converged, every message is delivered exactly once, and one delivered after
convergence is in the mailbox that owns its address under the one rule (the lowest guid
among the claims); no message bounced while its address existed at some site; no message
passed more sites than a bound; the sites agree on every address's owner.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from sitemail.admin.service import AdminService
from sitemail.core.clock import ManualClock
from sitemail.core.errors import SitemailError
from sitemail.directory import ObjectKind, RecipientChanges
from sitemail.directory.claims import move_aside_lost_claims
from sitemail.replication.apply import apply_objects, objects_since
from sitemail.routing.route import Transport
from sitemail.routing.router import Freshness, Router
from sitemail.routing.trace import Hop, Trace
from sitemail.store.tables import proxy_address

ADDRESSES = [f"a{i}@example.com" for i in range(3)]
RETRY = 300.0
MAX_SITES = 5


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """For each organisation size, its sites initialised once (copied per example)."""
    made = {}
    for count in range(3, MAX_SITES + 1):
        root = tmp_path_factory.mktemp(f"org{count}")
        names = [f"S{i}" for i in range(count)]
        for name in names:
            service = AdminService.init(
                root / name,
                org="ExchangeORG",
                site=name,
                server=f"Server{name}",
                domain=f"{name.lower()}.example.com",
                listen=[f"127.25.1.{names.index(name) + 1}"],
            )
            service.routing.add_domain("example.com")  # the shared domain, at every site
            for other in names:
                if other != name:
                    service.routing.add_connected_site(other, f"{other.lower()}.example.com")
            service.close()
        made[count] = root
    return made


@dataclass
class Message:
    ident: int
    address: str
    arrived: float
    hops: list[Hop] = field(default_factory=list)  # latest first, as in the header


@dataclass
class Site:
    name: str
    service: AdminService
    router: Router
    queue: list[Message] = field(default_factory=list)
    held: set[str] = field(default_factory=set)  # aliases of live mailboxes here
    caught_up: dict[str, float] = field(default_factory=dict)
    watermarks: dict[str, int] = field(default_factory=dict)


class Org:
    """The sites of one example and what happened to their mail."""

    def __init__(self, root: Path, clock: ManualClock) -> None:
        self.clock = clock
        self.sites: dict[str, Site] = {}
        for data_dir in sorted(root.iterdir()):
            service = AdminService.open(data_dir, clock)
            site = Site(data_dir.name, service, Router(service.directory))
            site.router = Router(
                service.directory,
                freshness=self._freshness(site),
                unknown_window=10**9,  # bounce only once caught up with every site
                loop_hold=RETRY,
                clock=clock.now,
            )
            self.sites[site.name] = site
        self.delivered: dict[int, list[tuple[str, str, bool]]] = {}  # id -> (site, guid, late)
        self.longest = 0  # the most site passes any message made
        self.bounced: list[tuple[Message, bool]] = []  # with: did some site have the address
        self.converged = False
        self.next_id = 0

    @staticmethod
    def _freshness(site: Site) -> Callable[[], Freshness]:
        return lambda: Freshness(dict(site.caught_up), frozenset())

    def close(self) -> None:
        for site in self.sites.values():
            site.service.close()

    # -- directory changes ------------------------------------------------------------------

    def create(self, name: str, alias: str, address: str) -> None:
        site = self.sites[name]
        if alias in site.held:
            return
        try:
            site.service.add_recipient(
                ObjectKind.MAILBOX, alias, display_name=alias, extra_addresses=[address]
            )
        except SitemailError:
            return  # the site sees the address taken: the admin would wait, as we do
        site.held.add(alias)

    def remove(self, name: str, alias: str) -> None:
        site = self.sites[name]
        if alias in site.held:
            site.service.remove_recipient(alias)
            site.held.discard(alias)

    def rename(self, name: str, alias: str, address: str) -> None:
        """Give the mailbox another shared address instead of its current ones."""
        site = self.sites[name]
        if alias not in site.held:
            return
        current = site.service.get_recipient(alias, ObjectKind.MAILBOX)
        shared = [p.address for p in current.proxies if p.address.endswith("@example.com")]
        try:
            site.service.directory.update_recipient(
                alias,
                RecipientChanges(add_addresses=[address], remove_addresses=shared),
            )
        except SitemailError:
            return

    # -- replication ------------------------------------------------------------------------

    def pull(self, name: str, peer: str) -> bool:
        """`name` takes `peer`'s naming context as it is now; True if anything changed."""
        site, source = self.sites[name], self.sites[peer]
        with source.service.store.read() as conn:
            found = objects_since(conn, peer, site.watermarks.get(peer, 0), 10**6)
        site.caught_up[peer] = self.clock.now()
        if not found:
            return False
        with site.service.store.write() as conn:
            result = apply_objects(conn, found, local_site=name, allowed=[peer])
            move_aside_lost_claims(conn, name, self.clock.now())
        site.watermarks[peer] = max(o.usn_changed for o in found)
        return result.applied > 0

    # -- mail -------------------------------------------------------------------------------

    def inject(self, name: str, address: str) -> None:
        self.sites[name].queue.append(Message(self.next_id, address, self.clock.now()))
        self.next_id += 1

    def run_queue(self, name: str) -> None:
        site = self.sites[name]
        waiting, site.queue = site.queue, []
        for message in waiting:
            self._route(site, message)

    def _route(self, site: Site, message: Message) -> None:
        passed: dict[str, float] = {}
        for hop in message.hops:
            passed[hop.site] = max(hop.at, passed.get(hop.site, 0.0))
        trace = Trace(passed, message.hops, message.arrived)
        self.longest = max(self.longest, len(message.hops))
        route = site.router.route(message.address, trace)
        if route.transport is Transport.LOCAL:
            self.delivered.setdefault(message.ident, []).append(
                (site.name, route.nexthop, self.converged)
            )
        elif route.transport is Transport.SITE:
            now = self.clock.now()
            hop = Hop(site.name, now, {"v": str(route.version)})
            nxt = Message(message.ident, message.address, now, [hop, *message.hops])
            self.sites[route.nexthop].queue.append(nxt)
        elif route.transport is Transport.DEFER:
            site.queue.append(message)
        else:
            self.bounced.append((message, self.exists(message.address)))

    def exists(self, address: str) -> bool:
        """Whether some site's own directory has a live recipient with the address."""
        return any(self.owner_claims(s, address) for s in self.sites.values())

    def owner_claims(self, site: Site, address: str) -> list[str]:
        """The guids of `site`'s own live objects that claim `address`."""
        guids = []
        for obj in site.service.directory.list_objects(ObjectKind.MAILBOX, site=site.name):
            if any(p.address.lower() == address for p in obj.proxies):
                guids.append(obj.guid)
        return guids

    def owner_index(self, site: Site, address: str) -> str | None:
        with site.service.store.read() as conn:
            return conn.execute(
                proxy_address.select()
                .with_only_columns(proxy_address.c.guid)
                .where(proxy_address.c.address_key == address)
            ).scalar_one_or_none()

    # -- convergence --------------------------------------------------------------------------

    def converge(self) -> None:
        names = list(self.sites)
        for _ in range(6):  # a move aside replicates, and may move another claim (bounded)
            self.clock.advance(1.0)
            changed = False
            for name in names:
                for peer in names:
                    if peer != name:
                        changed |= self.pull(name, peer)
            if not changed:
                break
        self.clock.advance(1.0)
        for name in names:  # caught up with everyone after the last change
            for peer in names:
                if peer != name:
                    self.pull(name, peer)
        self.converged = True
        for _ in range(4 * len(names) + 8):
            if not any(s.queue for s in self.sites.values()):
                return
            self.clock.advance(RETRY)
            for name in names:
                self.run_queue(name)


site_index = st.integers(0, MAX_SITES - 1)
alias_index = st.integers(0, 3)
address_index = st.integers(0, len(ADDRESSES) - 1)
_create = st.tuples(st.just("create"), site_index, alias_index, address_index)
_move = st.tuples(st.just("move"), site_index, site_index, alias_index, address_index)
_pull = st.tuples(st.just("pull"), site_index, site_index)
_inject = st.tuples(st.just("inject"), site_index, address_index)
_run = st.tuples(st.just("run"), site_index)
# Weighted by repetition: mail and replication are what most steps do.
actions = st.lists(
    st.one_of(
        _create,
        _create,
        st.tuples(st.just("remove"), site_index, alias_index),
        _move,
        _move,
        st.tuples(st.just("rename"), site_index, alias_index, address_index),
        _pull,
        _pull,
        _pull,
        _inject,
        _inject,
        _inject,
        _run,
        _run,
        _run,
        st.tuples(st.just("tick"), st.sampled_from([1.0, 60.0, RETRY])),
    ),
    min_size=8,
    max_size=40,
)


def play(org: Org, steps: list[tuple[object, ...]]) -> None:
    names = list(org.sites)

    def site(index: object) -> str:
        return names[int(str(index)) % len(names)]

    for step in steps:
        kind, args = step[0], step[1:]
        if kind == "create":
            org.create(site(args[0]), f"u{args[1]}", ADDRESSES[int(str(args[2]))])
        elif kind == "remove":
            org.remove(site(args[0]), f"u{args[1]}")
        elif kind == "move":
            org.remove(site(args[0]), f"u{args[2]}")
            org.create(site(args[1]), f"u{args[2]}", ADDRESSES[int(str(args[3]))])
        elif kind == "rename":
            org.rename(site(args[0]), f"u{args[1]}", ADDRESSES[int(str(args[2]))])
        elif kind == "pull" and site(args[0]) != site(args[1]):
            org.pull(site(args[0]), site(args[1]))
        elif kind == "inject":
            org.inject(site(args[0]), ADDRESSES[int(str(args[1]))])
        elif kind == "run":
            org.run_queue(site(args[0]))
        elif kind == "tick":
            org.clock.advance(float(str(args[0])))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(count=st.integers(3, MAX_SITES), steps=actions)
def test_routing_under_lag_delivers_once_to_the_owner_and_never_bounces_a_user(
    templates: dict[int, Path],
    tmp_path_factory: pytest.TempPathFactory,
    count: int,
    steps: list[tuple[object, ...]],
) -> None:
    """Any interleaving of replication, directory changes and mail over 3-5 sites."""
    root = Path(shutil.copytree(templates[count], tmp_path_factory.mktemp("example") / "org"))
    org = Org(root, ManualClock())
    note(f"{count} sites, steps {steps}")
    try:
        play(org, steps)
        org.converge()
        check(org)
        event(f"delivered {min(len(org.delivered), 3)}+, bounced {min(len(org.bounced), 1)}+")
        event(f"longest path {org.longest}")
    finally:
        org.close()


def check(org: Org) -> None:
    sites = list(org.sites.values())
    assert not any(s.queue for s in sites), "a message still waits after convergence"
    for address in ADDRESSES:
        claims = sorted(g for s in sites for g in org.owner_claims(s, address))
        owners = {org.owner_index(s, address) for s in sites}
        assert len(owners) == 1, f"sites disagree about {address}: {owners}"
        assert len(claims) <= 1, f"{address} still claimed by {claims} after convergence"
        assert owners == {claims[0] if claims else None}
    bounced = {m.ident for m, _ in org.bounced}
    assert not [m for m, existed in org.bounced if existed], "bounced a user who existed"
    for ident in range(org.next_id):
        copies = org.delivered.get(ident, [])
        assert len(copies) + (ident in bounced) == 1, f"message {ident}: {copies}"
    for message, _ in org.bounced:
        assert not org.exists(message.address)
    guids = {g: s.name for s in sites for a in ADDRESSES for g in org.owner_claims(s, a)}
    for copies in org.delivered.values():
        for site, guid, late in copies:
            if late:  # delivered once converged: to the owner of its address, at its home
                assert guids.get(guid) == site
    assert org.longest <= 2 * len(sites) * (len(sites) + 2), "too many site passes"


def test_hops_stay_bounded_between_two_sites_that_disagree(
    templates: dict[int, Path], tmp_path: Path
) -> None:
    """Two sites each holding the other's stale claim: the message goes back once and is
    held, never ping-ponged, until the directories change."""
    root = Path(shutil.copytree(templates[3], tmp_path / "org"))
    org = Org(root, ManualClock())
    try:
        org.create("S0", "u0", ADDRESSES[0])
        org.pull("S1", "S0")
        org.remove("S0", "u0")
        org.create("S1", "u0", ADDRESSES[1])  # unrelated change at S1
        org.inject("S1", ADDRESSES[0])  # S1 thinks S0 has it; S0 no longer does
        for _ in range(5):
            org.run_queue("S1")
            org.run_queue("S0")
        passes = [m for s in org.sites.values() for m in s.queue]
        assert len(passes) == 1
        assert len(passes[0].hops) <= 1  # S1 -> S0 and held there (4.4.3), no ping-pong
        assert not org.bounced
        org.converge()
        assert org.bounced  # nobody has a0 now: bounced once caught up with every site
        assert not org.delivered
    finally:
        org.close()
