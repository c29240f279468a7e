"""MX resolution (RFC 5321 §5.1, RFC 7505) against the embedded DNS server on loopback."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator

import pytest

from sitemail.lab.dns_server import EmbeddedDnsServer
from sitemail.routing.resolver import (
    DnsResolver,
    DnsRouteError,
    DnsTemporaryError,
    MailHosts,
    MailLoopError,
    MxRecord,
    NoMailHostError,
    NoSuchDomainError,
    NullMxError,
    Resolver,
    resolve_mail_hosts,
)

NOBODY: frozenset[str] = frozenset()


@pytest.fixture
def server() -> Iterator[EmbeddedDnsServer]:
    with EmbeddedDnsServer("127.0.0.1", 0, zones=["example.com", "example.net"]) as running:
        yield running


def resolver_for(server: EmbeddedDnsServer, *, tcp: bool = False) -> Resolver:
    return DnsResolver([server.nameserver], timeout=1.0, lifetime=2.0, tcp=tcp)


def mail_hosts(
    resolver: Resolver,
    domain: str,
    *,
    local_names: frozenset[str] = NOBODY,
    local_addresses: frozenset[str] = NOBODY,
    seed: int = 0,
) -> MailHosts:
    return asyncio.run(
        resolve_mail_hosts(
            domain,
            resolver,
            local_names=local_names,
            local_addresses=local_addresses,
            rng=random.Random(seed),
        )
    )


def names(hosts: MailHosts) -> list[str]:
    return [host.name for host in hosts.hosts]


def add_host(server: EmbeddedDnsServer, name: str, *addresses: str) -> None:
    for address in addresses:
        server.add(name, "AAAA" if ":" in address else "A", address)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_resolve_mail_hosts_orders_mx_by_preference(server: EmbeddedDnsServer, tcp: bool) -> None:
    """Hosts come lowest preference first, each with its addresses, IPv4 before IPv6."""
    server.add("example.com", "MX", "20 mx2.example.com.")
    server.add("example.com", "MX", "10 mx1.example.com.")
    server.add("example.com", "MX", "30 mx3.example.net.")
    add_host(server, "mx1.example.com", "127.10.10.10", "::1")
    add_host(server, "mx2.example.com", "127.10.10.15")
    add_host(server, "mx3.example.net", "127.10.10.20")

    hosts = mail_hosts(resolver_for(server, tcp=tcp), "example.com")

    assert hosts.domain == "example.com"
    assert not hosts.implicit_mx
    assert [(h.name, h.preference, h.addresses) for h in hosts.hosts] == [
        ("mx1.example.com", 10, ("127.10.10.10", "::1")),
        ("mx2.example.com", 20, ("127.10.10.15",)),
        ("mx3.example.net", 30, ("127.10.10.20",)),
    ]


def test_resolve_mail_hosts_shuffles_equal_preferences_by_rng(server: EmbeddedDnsServer) -> None:
    """Equal preferences come in both orders across seeds; one seed always gives one order."""
    server.add("example.com", "MX", "10 a.example.com.")
    server.add("example.com", "MX", "10 b.example.com.")
    server.add("example.com", "MX", "20 c.example.com.")
    for host, address in (("a", "127.0.0.11"), ("b", "127.0.0.12"), ("c", "127.0.0.13")):
        add_host(server, f"{host}.example.com", address)
    resolver = resolver_for(server)

    orders = {tuple(names(mail_hosts(resolver, "example.com", seed=seed))) for seed in range(16)}

    assert orders == {
        ("a.example.com", "b.example.com", "c.example.com"),
        ("b.example.com", "a.example.com", "c.example.com"),
    }
    assert names(mail_hosts(resolver, "example.com", seed=3)) == names(
        mail_hosts(resolver, "example.com", seed=3)
    )


def test_resolve_mail_hosts_falls_back_to_implicit_mx(server: EmbeddedDnsServer) -> None:
    """No MX records: the domain itself is the one host, at preference 0."""
    add_host(server, "example.com", "127.10.10.10", "::1")

    hosts = mail_hosts(resolver_for(server), "example.com")

    assert hosts.implicit_mx
    assert [(h.name, h.preference, h.addresses) for h in hosts.hosts] == [
        ("example.com", 0, ("127.10.10.10", "::1"))
    ]


def test_resolve_mail_hosts_accepts_aaaa_only_host(server: EmbeddedDnsServer) -> None:
    """A host with only AAAA records is usable: the A no-data is not an error."""
    server.add("example.com", "MX", "10 six.example.com.")
    add_host(server, "six.example.com", "::1")

    hosts = mail_hosts(resolver_for(server), "example.com")

    assert [(h.name, h.addresses) for h in hosts.hosts] == [("six.example.com", ("::1",))]


def test_dns_resolver_no_data_is_empty_not_nxdomain(server: EmbeddedDnsServer) -> None:
    """A name that exists without the asked type gives an empty answer, no error."""
    add_host(server, "v4.example.com", "127.0.0.1")
    resolver = resolver_for(server)

    assert asyncio.run(resolver.mx("v4.example.com")) == ()
    assert asyncio.run(resolver.addresses("v4.example.com")) == ("127.0.0.1",)


def test_dns_resolver_reads_mx_records_lowercase_without_final_dot(
    server: EmbeddedDnsServer,
) -> None:
    """MX exchanges come back normalised; the null MX reads as "."."""
    server.add("example.com", "MX", "10 MX1.Example.COM.")
    server.add("nomail.example.com", "MX", "0 .")
    resolver = resolver_for(server)

    assert asyncio.run(resolver.mx("example.com")) == (MxRecord(10, "mx1.example.com"),)
    assert asyncio.run(resolver.mx("nomail.example.com")) == (MxRecord(0, "."),)


def test_resolve_mail_hosts_nxdomain_is_permanent_5_1_2(server: EmbeddedDnsServer) -> None:
    """A domain that does not exist bounces with 550 5.1.2."""
    with pytest.raises(NoSuchDomainError) as caught:
        mail_hosts(resolver_for(server), "nowhere.example.com")

    assert (caught.value.code, caught.value.enhanced, caught.value.temporary) == (
        550,
        "5.1.2",
        False,
    )
    assert caught.value.domain == "nowhere.example.com"


def test_resolve_mail_hosts_invalid_name_is_permanent_5_1_2(server: EmbeddedDnsServer) -> None:
    """A domain that is not a valid DNS name bounces like a missing one."""
    with pytest.raises(NoSuchDomainError):
        mail_hosts(resolver_for(server), "bad..example.com")


def test_resolve_mail_hosts_null_mx_is_permanent_5_1_10(server: EmbeddedDnsServer) -> None:
    """`MX 0 .` means the domain accepts no mail: 556 5.1.10, even with an A record."""
    server.add("example.com", "MX", "0 .")
    add_host(server, "example.com", "127.10.10.10")

    with pytest.raises(NullMxError) as caught:
        mail_hosts(resolver_for(server), "example.com")

    assert (caught.value.code, caught.value.enhanced, caught.value.temporary) == (
        556,
        "5.1.10",
        False,
    )
    assert "accepts no mail" in str(caught.value)


def test_resolve_mail_hosts_ignores_null_mx_mixed_with_real_ones(
    server: EmbeddedDnsServer,
) -> None:
    """A null MX next to real MX records (against RFC 7505) is skipped, the rest used."""
    server.add("example.com", "MX", "0 .")
    server.add("example.com", "MX", "10 mx1.example.com.")
    add_host(server, "mx1.example.com", "127.10.10.10")

    assert names(mail_hosts(resolver_for(server), "example.com")) == ["mx1.example.com"]


def test_resolve_mail_hosts_drops_self_and_equal_or_worse_preferences(
    server: EmbeddedDnsServer,
) -> None:
    """An MX that is us (by name) cuts itself and every MX of equal or higher preference."""
    server.add("example.com", "MX", "10 better.example.com.")
    server.add("example.com", "MX", "20 me.example.com.")
    server.add("example.com", "MX", "20 peer.example.com.")
    server.add("example.com", "MX", "30 backup.example.com.")
    for host, address in (
        ("better", "127.10.10.20"),
        ("me", "127.10.10.10"),
        ("peer", "127.10.10.15"),
        ("backup", "127.10.10.25"),
    ):
        add_host(server, f"{host}.example.com", address)

    for seed in range(4):
        hosts = mail_hosts(
            resolver_for(server),
            "example.com",
            local_names=frozenset({"ME.example.com."}),
            seed=seed,
        )
        assert names(hosts) == ["better.example.com"]


def test_resolve_mail_hosts_recognises_self_by_address(server: EmbeddedDnsServer) -> None:
    """An MX whose name is foreign but whose address is ours counts as us."""
    server.add("example.com", "MX", "10 better.example.com.")
    server.add("example.com", "MX", "20 alias-of-me.example.net.")
    server.add("example.com", "MX", "30 backup.example.com.")
    add_host(server, "better.example.com", "127.10.10.20")
    add_host(server, "alias-of-me.example.net", "127.0.0.99", "::1")
    add_host(server, "backup.example.com", "127.10.10.25")

    hosts = mail_hosts(resolver_for(server), "example.com", local_addresses=frozenset({"0:0::1"}))

    assert names(hosts) == ["better.example.com"]


def test_resolve_mail_hosts_only_self_is_loop_5_4_6(server: EmbeddedDnsServer) -> None:
    """When we are the best MX, nothing is left: 5.4.6 "loops back to myself"."""
    server.add("example.com", "MX", "10 me.example.com.")
    server.add("example.com", "MX", "20 backup.example.com.")
    add_host(server, "me.example.com", "127.10.10.10")
    add_host(server, "backup.example.com", "127.10.10.25")

    with pytest.raises(MailLoopError) as caught:
        mail_hosts(
            resolver_for(server),
            "example.com",
            local_addresses=frozenset({"127.10.10.10"}),
        )

    assert (caught.value.enhanced, caught.value.temporary) == ("5.4.6", False)
    assert "loops back to myself" in str(caught.value)


def test_resolve_mail_hosts_implicit_mx_to_self_is_loop(server: EmbeddedDnsServer) -> None:
    """The implicit MX is subject to self-exclusion like any other."""
    add_host(server, "example.com", "127.10.10.10")

    with pytest.raises(MailLoopError):
        mail_hosts(
            resolver_for(server),
            "example.com",
            local_addresses=frozenset({"127.10.10.10"}),
        )


def test_resolve_mail_hosts_no_address_anywhere_is_permanent_5_4_4(
    server: EmbeddedDnsServer,
) -> None:
    """MX hosts that do not exist, or no MX and no A/AAAA: nowhere to go, 5.4.4."""
    server.add("example.com", "MX", "10 ghost.example.com.")
    server.add("noaddr.example.net", "TXT", '"exists, but no MX and no address"')
    resolver = resolver_for(server)

    with pytest.raises(NoMailHostError) as caught:
        mail_hosts(resolver, "example.com")
    assert (caught.value.enhanced, caught.value.temporary) == ("5.4.4", False)
    with pytest.raises(NoMailHostError):
        mail_hosts(resolver, "noaddr.example.net")


def test_resolve_mail_hosts_skips_hosts_without_address(server: EmbeddedDnsServer) -> None:
    """A broken MX host is skipped in favour of the next one that resolves."""
    server.add("example.com", "MX", "10 ghost.example.com.")
    server.add("example.com", "MX", "20 mx2.example.com.")
    add_host(server, "mx2.example.com", "127.10.10.15")

    assert names(mail_hosts(resolver_for(server), "example.com")) == ["mx2.example.com"]


def test_resolve_mail_hosts_servfail_is_temporary_4_4_3(server: EmbeddedDnsServer) -> None:
    """SERVFAIL for the domain, or for its only MX host, is retried later: 451 4.4.3."""
    server.add("example.com", "MX", "10 mx1.example.com.")
    add_host(server, "mx1.example.com", "127.10.10.10")
    resolver = resolver_for(server)

    server.set_failing("example.com")
    with pytest.raises(DnsTemporaryError) as caught:
        mail_hosts(resolver, "example.com")
    assert (caught.value.code, caught.value.enhanced, caught.value.temporary) == (
        451,
        "4.4.3",
        True,
    )

    server.set_failing("example.com", failing=False)
    server.set_failing("mx1.example.com")
    with pytest.raises(DnsTemporaryError):
        mail_hosts(resolver, "example.com")


def test_resolve_mail_hosts_refused_is_temporary(server: EmbeddedDnsServer) -> None:
    """A domain our DNS server does not serve is REFUSED: temporary, never a bounce."""
    with pytest.raises(DnsTemporaryError):
        mail_hosts(resolver_for(server), "unserved.test")


def test_dns_resolver_dead_server_is_temporary() -> None:
    """A port nobody answers on ends in a temporary error within the lifetime."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never read: queries just time out
        for port in (closed_port, silent.getsockname()[1]):
            resolver = DnsResolver([("127.0.0.1", port)], timeout=0.2, lifetime=0.5)
            with pytest.raises(DnsTemporaryError) as caught:
                mail_hosts(resolver, "example.com")
            assert caught.value.temporary
            assert isinstance(caught.value, DnsRouteError)


def test_resolve_mail_hosts_follows_cname(server: EmbeddedDnsServer) -> None:
    """CNAMEs are followed, for the domain's MX and for an MX host's address."""
    server.add("mail.example.com", "CNAME", "example.net.")
    server.add("example.net", "MX", "10 mx.example.net.")
    server.add("mx.example.net", "CNAME", "real-mx.example.com.")
    add_host(server, "real-mx.example.com", "127.10.10.15")

    hosts = mail_hosts(resolver_for(server), "mail.example.com")

    assert [(h.name, h.addresses) for h in hosts.hosts] == [("mx.example.net", ("127.10.10.15",))]


def test_resolve_mail_hosts_ignores_case(server: EmbeddedDnsServer) -> None:
    """Domain, MX names and local names compare case-insensitively; results are lowercase."""
    server.add("EXAMPLE.com", "MX", "10 Mx1.EXAMPLE.com.")
    server.add("EXAMPLE.com", "MX", "20 Me.Example.Com.")
    add_host(server, "MX1.example.COM", "127.10.10.10")
    add_host(server, "me.example.com", "127.10.10.15")

    hosts = mail_hosts(
        resolver_for(server), "Example.COM.", local_names=frozenset({"ME.EXAMPLE.COM"})
    )

    assert hosts.domain == "example.com"
    assert names(hosts) == ["mx1.example.com"]


def test_resolve_mail_hosts_sees_runtime_record_edits(server: EmbeddedDnsServer) -> None:
    """The resolver has no cache: DNS edits apply to the next resolution."""
    server.add("example.com", "MX", "10 mx1.example.com.")
    add_host(server, "mx1.example.com", "127.10.10.10")
    add_host(server, "mx2.example.com", "127.10.10.15")
    resolver = resolver_for(server)
    assert names(mail_hosts(resolver, "example.com")) == ["mx1.example.com"]

    server.replace("example.com", "MX", ["10 mx2.example.com."])
    assert names(mail_hosts(resolver, "example.com")) == ["mx2.example.com"]

    server.replace("example.com", "MX", ["0 ."])
    with pytest.raises(NullMxError):
        mail_hosts(resolver, "example.com")

    server.remove("example.com", "MX")
    add_host(server, "example.com", "127.10.10.20")
    assert mail_hosts(resolver, "example.com").implicit_mx
