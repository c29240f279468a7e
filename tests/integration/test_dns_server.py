"""The embedded DNS server answers like an authoritative server, over real loopback sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from sitemail.lab.dns_server import DnsZone, EmbeddedDnsServer, parse_zone_text

ZONE = """
$ORIGIN example.com.
$TTL 300
@           IN SOA  ns1 hostmaster 2026112501 3600 600 86400 120
@           IN NS   ns1
@           IN MX   10 mx1
@           IN TXT  "v=spf1 mx -all"
ns1         IN A    127.0.0.53
mx1         IN A    127.10.10.10
mx1         IN AAAA ::1
www         IN CNAME mx1
out         IN CNAME mail.elsewhere.test.
deep.a.b    IN A    127.0.0.2
nomail      IN MX   0 .
"""


@pytest.fixture
def server() -> Iterator[EmbeddedDnsServer]:
    with EmbeddedDnsServer("127.0.0.1", 0) as running:
        running.load_zone_text(ZONE, origin="example.com")
        yield running


def ask(
    server: EmbeddedDnsServer, name: str, rtype: str, *, tcp: bool = False
) -> dns.message.Message:
    query = dns.message.make_query(name, rtype)
    if tcp:
        return dns.query.tcp(query, server.address, port=server.port, timeout=2.0)
    return dns.query.udp(query, server.address, port=server.port, timeout=2.0)


def answers(reply: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


def rcode(reply: dns.message.Message) -> str:
    return dns.rcode.to_text(reply.rcode())


def authority_types(reply: dns.message.Message) -> list[str]:
    return [dns.rdatatype.to_text(rrset.rdtype) for rrset in reply.authority]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_embedded_dns_server_answers_on_the_port_it_picked(
    server: EmbeddedDnsServer, tcp: bool
) -> None:
    """Port 0 binds one free port for both UDP and TCP, and `port` reports it."""
    assert server.port > 0
    assert server.nameserver == ("127.0.0.1", server.port)
    reply = ask(server, "mx1.example.com", "A", tcp=tcp)
    assert rcode(reply) == "NOERROR"
    assert answers(reply) == ["127.10.10.10"]


def test_embedded_dns_server_answers_authoritatively_without_recursion(
    server: EmbeddedDnsServer,
) -> None:
    """Replies carry AA and not RA: it is a zone server, not a recursive resolver."""
    reply = ask(server, "example.com", "MX")
    assert reply.flags & dns.flags.AA
    assert not reply.flags & dns.flags.RA


def test_embedded_dns_server_serves_each_record_type(server: EmbeddedDnsServer) -> None:
    """A, AAAA, MX, TXT, NS, SOA and CNAME are answered from the zone text."""
    assert answers(ask(server, "mx1.example.com", "AAAA")) == ["::1"]
    assert answers(ask(server, "example.com", "MX")) == ["10 mx1.example.com."]
    assert answers(ask(server, "example.com", "TXT")) == ['"v=spf1 mx -all"']
    assert answers(ask(server, "example.com", "NS")) == ["ns1.example.com."]
    assert answers(ask(server, "example.com", "SOA")) == [
        "ns1.example.com. hostmaster.example.com. 2026112501 3600 600 86400 120"
    ]
    assert answers(ask(server, "www.example.com", "CNAME")) == ["mx1.example.com."]


def test_embedded_dns_server_serves_null_mx(server: EmbeddedDnsServer) -> None:
    """`MX 0 .` goes out as preference 0 with the root name as exchange."""
    reply = ask(server, "nomail.example.com", "MX")
    assert answers(reply) == ["0 ."]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_embedded_dns_server_no_data_is_noerror_with_soa(
    server: EmbeddedDnsServer, tcp: bool
) -> None:
    """A name without the asked type: NOERROR, empty answer, SOA in authority."""
    reply = ask(server, "www.example.com", "MX", tcp=tcp)  # via CNAME to mx1: no MX
    assert rcode(reply) == "NOERROR"
    reply = ask(server, "ns1.example.com", "AAAA", tcp=tcp)
    assert rcode(reply) == "NOERROR"
    assert reply.answer == []
    assert authority_types(reply) == ["SOA"]


def test_embedded_dns_server_empty_non_terminal_is_no_data(server: EmbeddedDnsServer) -> None:
    """A name with no records but names below it exists: no-data, not NXDOMAIN."""
    for name in ("a.b.example.com", "b.example.com"):
        reply = ask(server, name, "A")
        assert rcode(reply) == "NOERROR"
        assert reply.answer == []
        assert authority_types(reply) == ["SOA"]


def test_embedded_dns_server_absent_name_is_nxdomain_with_soa(server: EmbeddedDnsServer) -> None:
    """A name absent from a served zone is NXDOMAIN, with the SOA for negative caching."""
    reply = ask(server, "nobody.example.com", "A")
    assert rcode(reply) == "NXDOMAIN"
    assert authority_types(reply) == ["SOA"]
    soa = reply.authority[0]
    assert soa.name.to_text() == "example.com."


def test_embedded_dns_server_refuses_names_outside_its_zones(server: EmbeddedDnsServer) -> None:
    """Names in no served zone are REFUSED, never NXDOMAIN."""
    for name in ("example.net", "com", "notexample.com"):
        assert rcode(ask(server, name, "A")) == "REFUSED"


def test_embedded_dns_server_follows_cname_within_its_zones(server: EmbeddedDnsServer) -> None:
    """A CNAME is answered with the target's records when the target is served."""
    reply = ask(server, "www.example.com", "A")
    assert rcode(reply) == "NOERROR"
    assert [rrset.rdtype for rrset in reply.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert answers(reply) == ["127.10.10.10", "mx1.example.com."]


def test_embedded_dns_server_stops_cname_chain_at_its_zone_edge(
    server: EmbeddedDnsServer,
) -> None:
    """A CNAME to a name outside the served zones is answered alone, NOERROR."""
    reply = ask(server, "out.example.com", "A")
    assert rcode(reply) == "NOERROR"
    assert answers(reply) == ["mail.elsewhere.test."]


def test_embedded_dns_server_ignores_case_and_echoes_spelling(server: EmbeddedDnsServer) -> None:
    """Names match case-insensitively; the answer keeps the question's spelling."""
    reply = ask(server, "MX1.Example.COM", "A")
    assert answers(reply) == ["127.10.10.10"]
    assert reply.answer[0].name.to_text() == "MX1.Example.COM."
    server.add("UPPER.EXAMPLE.COM", "A", "127.0.0.9")
    assert answers(ask(server, "upper.example.com", "A")) == ["127.0.0.9"]


def test_embedded_dns_server_applies_runtime_edits(server: EmbeddedDnsServer) -> None:
    """add, replace and remove are visible to the very next query."""
    server.add("new.example.com", "A", "127.0.0.7")
    server.add("new.example.com", "A", "127.0.0.8", ttl=30)
    assert answers(ask(server, "new.example.com", "A")) == ["127.0.0.7", "127.0.0.8"]

    server.replace("example.com", "MX", ["20 mx2.example.com.", "30 mx3.example.com."])
    assert answers(ask(server, "example.com", "MX")) == [
        "20 mx2.example.com.",
        "30 mx3.example.com.",
    ]

    assert server.remove("new.example.com", "A") == 2
    assert rcode(ask(server, "new.example.com", "A")) == "NXDOMAIN"
    assert server.remove("mx1.example.com") == 2
    assert rcode(ask(server, "mx1.example.com", "A")) == "NXDOMAIN"


def test_embedded_dns_server_adding_a_record_twice_keeps_one(server: EmbeddedDnsServer) -> None:
    """An RRset is a set: the same data added again replaces the old TTL, not doubles."""
    server.add("twice.example.com", "A", "127.0.0.5", ttl=10)
    server.add("twice.example.com", "A", "127.0.0.5", ttl=99)
    reply = ask(server, "twice.example.com", "A")
    assert answers(reply) == ["127.0.0.5"]
    assert reply.answer[0].ttl == 99


def test_embedded_dns_server_answers_servfail_when_told(server: EmbeddedDnsServer) -> None:
    """set_failing makes a name answer SERVFAIL until it is cleared."""
    server.set_failing("mx1.example.com")
    assert rcode(ask(server, "mx1.example.com", "A")) == "SERVFAIL"
    assert rcode(ask(server, "www.example.com", "A")) == "SERVFAIL"  # via the CNAME
    server.set_failing("mx1.example.com", failing=False)
    assert rcode(ask(server, "mx1.example.com", "A")) == "NOERROR"


def test_embedded_dns_server_serves_several_zones_most_specific_first() -> None:
    """A zone below another one answers for its own names, with its own SOA."""
    with EmbeddedDnsServer(zones=["example.com", "sitea.example.com"]) as server:
        server.add("host.sitea.example.com", "A", "127.10.10.10")
        reply = ask(server, "nothing.sitea.example.com", "A")
        assert rcode(reply) == "NXDOMAIN"
        assert reply.authority[0].name.to_text() == "sitea.example.com."
        assert answers(ask(server, "host.sitea.example.com", "A")) == ["127.10.10.10"]


def test_embedded_dns_server_loads_zone_text_with_its_soa() -> None:
    """Zone text with an SOA creates that zone; $ORIGIN and relative names work."""
    with EmbeddedDnsServer() as server:
        server.load_zone_text(ZONE)
        assert server.resolver.zone_for("mx1.example.com") is not None
        assert answers(ask(server, "example.com", "MX")) == ["10 mx1.example.com."]
        zone = server.resolver.zone_for("example.com")
        assert zone is not None
        assert zone.soa.rdata.endswith("2026112501 3600 600 86400 120")


def test_parse_zone_text_yields_absolute_lowercase_records() -> None:
    """Records come back absolute, lowercase, with the default or $TTL TTL."""
    records = parse_zone_text("Host IN A 127.0.0.1\n", origin="Example.COM.", ttl=42)
    assert [record.to_zone() for record in records] == ["host.example.com. 42 IN A 127.0.0.1"]


def test_dns_zone_rejects_invalid_edits() -> None:
    """Out-of-zone names, unknown types, CNAME plus data and SOA removal are refused."""
    zone = DnsZone("example.com")
    zone.add("www.example.com", "CNAME", "mx1.example.com.")
    with pytest.raises(ValueError, match="not in zone"):
        zone.add("example.net", "A", "127.0.0.1")
    with pytest.raises(ValueError, match="unsupported record type"):
        zone.add("example.com", "SRV", "0 0 25 mx1.example.com.")
    with pytest.raises(ValueError, match="CNAME"):
        zone.add("www.example.com", "A", "127.0.0.1")
    with pytest.raises(ValueError, match="SOA"):
        zone.remove("example.com", "SOA")
    with pytest.raises(ValueError, match="cannot parse"):
        zone.add("example.com", "A", "not-an-address")


def test_embedded_dns_server_rejects_records_outside_its_zones() -> None:
    """Adding a record for a name in no served zone is an error, not a new zone."""
    server = EmbeddedDnsServer(zones=["example.com"])
    with pytest.raises(ValueError, match="no served zone"):
        server.add("example.net", "A", "127.0.0.1")


def test_embedded_dns_server_refuses_non_loopback_addresses() -> None:
    """The lab stays on loopback: any other listen address is refused before binding."""
    for address in ("0.0.0.0", "192.0.2.1", "::"):
        with pytest.raises(ValueError, match="loopback"):
            EmbeddedDnsServer(address, 0)


def test_embedded_dns_server_port_is_unknown_until_started() -> None:
    """Asking the port of a server that never bound is an error, not a guess."""
    server = EmbeddedDnsServer()
    with pytest.raises(RuntimeError):
        _ = server.port


def test_embedded_dns_server_stop_releases_its_port() -> None:
    """After stop() the UDP and TCP port can be bound again; stop() twice is harmless."""
    server = EmbeddedDnsServer().start()
    port = server.port
    server.stop()
    server.stop()
    assert not server.running
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("127.0.0.1", port))


def test_embedded_dns_server_answers_consistently_during_edits(
    server: EmbeddedDnsServer,
) -> None:
    """Queries racing with replace() always see one whole RRset, never a torn one."""
    stop = threading.Event()

    def edit() -> None:
        flip = False
        while not stop.is_set():
            rdatas = ["127.0.0.1", "127.0.0.2"] if flip else ["127.0.0.3", "127.0.0.4"]
            server.replace("race.example.com", "A", rdatas)
            flip = not flip
            stop.wait(0.0005)  # let the server threads run too

    server.replace("race.example.com", "A", ["127.0.0.1", "127.0.0.2"])
    editor = threading.Thread(target=edit)
    editor.start()
    try:
        seen = {tuple(answers(ask(server, "race.example.com", "A"))) for _ in range(50)}
    finally:
        stop.set()
        editor.join()
    assert seen <= {("127.0.0.1", "127.0.0.2"), ("127.0.0.3", "127.0.0.4")}
