"""Embedded authoritative DNS server on loopback, for the lab and the tests.

Its one job: answer DNS queries, over UDP and TCP on one loopback address and port, from
zones held in memory that callers edit while the server runs. It is the only DNS the lab
and the tests ever talk to (the machine's own resolver is never used).

Collaborators: dnslib's ``DNSServer`` does the sockets, the threads and the wire format;
``AuthoritativeResolver`` (ours; dnslib's ``ZoneResolver`` answers NXDOMAIN for no-data
and sends no SOA) decides every answer from a set of ``DnsZone``.

Invariants:
- It binds loopback addresses only (127.0.0.0/8, ::1); port 0 picks one free port for
  both UDP and TCP, and ``port`` reports it.
- Names are case-insensitive; records are stored lowercase with a trailing dot, and the
  first answer record echoes the question's spelling.
- Answers are authoritative (AA set, RA clear, no recursion, no cache):
  records of the asked type at the exact name; else the name's CNAME, followed through
  the served zones (at most ``MAX_CNAME_CHAIN`` links); else, when the name exists or is
  an empty non-terminal, no-data: NOERROR, empty answer, the zone's SOA in authority;
  else NXDOMAIN with the SOA; names in no served zone get REFUSED.
- Each zone has exactly one SOA, at its origin; a CNAME owner has no other data.
- Not supported on purpose: wildcards, delegation (NS below an origin is plain data),
  DNSSEC, zone transfers, record types other than ``RECORD_TYPES``.
- Every method is thread-safe: dnslib answers from its own threads while the owner edits.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, Final, Self

# dnslib ships no type information; pyproject's [[tool.mypy.overrides]] sets
# ignore_missing_imports for dnslib.*, so its names are typed Any here.
from dnslib import QTYPE, RCODE, RR
from dnslib.server import DNSHandler, DNSLogger, DNSServer

__all__ = [
    "MAX_CNAME_CHAIN",
    "RECORD_TYPES",
    "AuthoritativeResolver",
    "DnsRecord",
    "DnsZone",
    "EmbeddedDnsServer",
    "parse_zone_text",
]

#: Record types this server stores and answers, by their numeric code.
_TYPE_CODES: Final = MappingProxyType(
    {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
)
RECORD_TYPES: Final = frozenset(_TYPE_CODES)
MAX_CNAME_CHAIN: Final = 8
_QTYPE_ANY: Final = 255
_CLASS_IN: Final = 1
_CLASS_ANY: Final = 255
_OPCODE_QUERY: Final = 0
_FREE_PORT_ATTEMPTS: Final = 20
_POLL_INTERVAL: Final = 0.025  # seconds; how fast stop() returns

_Key = tuple[bytes, ...]  # a name as lowercase labels, most specific first


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """One resource record as zone-file text: ``name ttl IN rtype rdata``."""

    name: str  # absolute, lowercase, trailing dot
    rtype: str  # one of RECORD_TYPES
    rdata: str  # zone-file text of the data, e.g. "10 mx1.example.com."
    ttl: int

    def to_zone(self) -> str:
        """This record as one zone-file line."""
        return f"{self.name} {self.ttl} IN {self.rtype} {self.rdata}"


def _key(name: object) -> _Key:
    """Normalise a name (str or dnslib label) to its lowercase label tuple."""
    text = str(name).strip()
    if text in ("", "."):
        return ()
    labels = text.rstrip(".").lower().split(".")
    if text.isascii():
        return tuple(label.encode("ascii") for label in labels)
    return tuple(label.encode("idna") for label in labels)


def _text(key: _Key) -> str:
    return ".".join(label.decode("ascii") for label in key) + "."


def _under(key: _Key, origin: _Key) -> bool:
    return len(key) >= len(origin) and key[len(key) - len(origin) :] == origin


def _type_code(rtype: str) -> int:
    code = _TYPE_CODES.get(rtype.upper())
    if code is None:
        raise ValueError(f"unsupported record type {rtype!r}; use one of {sorted(RECORD_TYPES)}")
    return code


def _rdata_identity(rr: Any) -> str:
    text = str(rr.rdata.toZone())
    return text if rr.rtype == _TYPE_CODES["TXT"] else text.lower()


def _to_record(rr: Any) -> DnsRecord:
    return DnsRecord(
        name=_text(_key(rr.rname)),
        rtype=str(QTYPE[rr.rtype]),
        rdata=str(rr.rdata.toZone()),
        ttl=int(rr.ttl),
    )


def _parse_rrs(text: str, *, origin: str, ttl: int) -> list[Any]:
    try:
        rrs = list(RR.fromZone(text, origin=origin, ttl=ttl))
    except Exception as exc:  # dnslib raises DNSError, ValueError, IndexError, ...
        raise ValueError(f"cannot parse zone text {text!r}: {exc}") from exc
    for rr in rrs:
        if rr.rtype not in _TYPE_CODES.values():
            raise ValueError(f"unsupported record type in {text!r}")
    return rrs


def parse_zone_text(text: str, *, origin: str = "", ttl: int = 60) -> tuple[DnsRecord, ...]:
    """Parse zone-file text ($ORIGIN, $TTL, @, relative names) into records.

    Names without a trailing dot are relative to ``origin`` (or to $ORIGIN); with no
    origin at all they are taken as absolute.
    """
    return tuple(_to_record(rr) for rr in _parse_rrs(text, origin=origin, ttl=ttl))


def _one_rr(name: str, rtype: str, rdata: str, ttl: int) -> Any:
    if ttl < 0:
        raise ValueError(f"negative TTL {ttl}")
    code = _type_code(rtype)
    owner = _text(_key(name))
    rrs = _parse_rrs(f"{owner} {ttl} IN {rtype.upper()} {rdata}", origin="", ttl=ttl)
    if len(rrs) != 1 or rrs[0].rtype != code:
        raise ValueError(f"{rdata!r} is not one {rtype} record")
    return rrs[0]


@dataclass(frozen=True, slots=True)
class _Lookup:
    """What one zone says about one name and type."""

    rcode: int
    answers: tuple[Any, ...]  # dnslib RRs, owner spelled as stored
    cname_target: _Key | None  # set when ``answers`` is a CNAME to follow
    soa: Any  # the zone's SOA RR, for the authority section of negative answers


class DnsZone:
    """The records of one zone, under one origin, with exactly one SOA; thread-safe."""

    def __init__(self, origin: str, *, soa: str | None = None, ttl: int = 60) -> None:
        """Create an empty zone; without ``soa`` text a default SOA is made up.

        ``soa`` is SOA rdata text, e.g. ``"ns.example.com. hostmaster.example.com. 1 3600
        600 86400 60"``; its last field (minimum) is the negative-answer TTL.
        """
        self._origin = _key(origin)
        if not self._origin:
            raise ValueError("serving the root zone is not supported")
        apex = _text(self._origin)
        soa_text = soa or f"ns.{apex} hostmaster.{apex} 1 3600 600 86400 {ttl}"
        self._soa: Any = _one_rr(apex, "SOA", soa_text, ttl)
        self._names: dict[_Key, dict[int, list[Any]]] = {}
        self._lock = threading.Lock()

    @property
    def origin(self) -> str:
        """The zone's origin, lowercase with a trailing dot."""
        return _text(self._origin)

    @property
    def soa(self) -> DnsRecord:
        """The zone's SOA record."""
        with self._lock:
            return _to_record(self._soa)

    def covers(self, name: str) -> bool:
        """Whether ``name`` is the origin or below it."""
        return _under(_key(name), self._origin)

    def _owner(self, name: str) -> _Key:
        key = _key(name)
        if not _under(key, self._origin):
            raise ValueError(f"{name!r} is not in zone {self.origin}")
        return key

    def add(self, name: str, rtype: str, rdata: str, ttl: int = 60) -> DnsRecord:
        """Add one record; an identical one is replaced (new TTL). SOA replaces the SOA."""
        key = self._owner(name)
        rr = _one_rr(name, rtype, rdata, ttl)
        with self._lock:
            self._add_locked(key, rr)
        return _to_record(rr)

    def _add_locked(self, key: _Key, rr: Any) -> None:
        code = int(rr.rtype)
        if code == _TYPE_CODES["SOA"]:
            if key != self._origin:
                raise ValueError(f"SOA only at the zone origin {self.origin}")
            self._soa = rr
            return
        by_type = self._names.get(key, {})
        cname = _TYPE_CODES["CNAME"]
        if (code == cname and any(t != cname for t in by_type)) or (
            code != cname and cname in by_type
        ):
            raise ValueError(f"{_text(key)}: a CNAME owner can have no other data")
        identity = _rdata_identity(rr)
        rrset = [old for old in by_type.get(code, []) if _rdata_identity(old) != identity]
        if code == cname and rrset:
            raise ValueError(f"{_text(key)}: only one CNAME per name")
        rrset.append(rr)
        by_type[code] = rrset
        self._names[key] = by_type

    def remove(self, name: str, rtype: str | None = None) -> int:
        """Remove the name's records of ``rtype`` (all types if None); return how many.

        The SOA is never removed: replace it with ``add(origin, "SOA", ...)``.
        """
        key = self._owner(name)
        if rtype is not None and _type_code(rtype) == _TYPE_CODES["SOA"]:
            raise ValueError("a zone always has its SOA; add a new one to replace it")
        with self._lock:
            by_type = self._names.get(key)
            if by_type is None:
                return 0
            if rtype is None:
                removed = sum(len(rrset) for rrset in by_type.values())
                del self._names[key]
                return removed
            removed = len(by_type.pop(_type_code(rtype), []))
            if not by_type:
                del self._names[key]
            return removed

    def replace(
        self, name: str, rtype: str, rdatas: Iterable[str], ttl: int = 60
    ) -> tuple[DnsRecord, ...]:
        """Atomically make ``rdatas`` the name's whole RRset of ``rtype`` (empty: remove)."""
        key = self._owner(name)
        code = _type_code(rtype)
        if code == _TYPE_CODES["SOA"]:
            raise ValueError("replace the SOA with add(origin, 'SOA', ...)")
        rrs = [_one_rr(name, rtype, rdata, ttl) for rdata in rdatas]
        with self._lock:
            saved = {t: list(rrset) for t, rrset in self._names.get(key, {}).items()}
            self._names.get(key, {}).pop(code, None)
            try:
                for rr in rrs:
                    self._add_locked(key, rr)
            except ValueError:
                if saved:
                    self._names[key] = saved
                else:
                    self._names.pop(key, None)
                raise
            if not self._names.get(key, True):
                del self._names[key]
        return tuple(_to_record(rr) for rr in rrs)

    def records(self) -> tuple[DnsRecord, ...]:
        """Every record, the SOA first, then by name and type."""
        with self._lock:
            rrs = [self._soa] + [
                rr
                for _, by_type in sorted(self._names.items(), key=lambda kv: kv[0][::-1])
                for _, rrset in sorted(by_type.items())
                for rr in rrset
            ]
        return tuple(_to_record(rr) for rr in rrs)

    def lookup(self, key: _Key, qtype: int) -> _Lookup:
        """Answer one name (as a key) and type from this zone alone; no CNAME chasing."""
        with self._lock:
            soa = self._soa
            if key == self._origin and qtype in (_TYPE_CODES["SOA"], _QTYPE_ANY):
                found = [soa] + (
                    [rr for rrset in self._names.get(key, {}).values() for rr in rrset]
                    if qtype == _QTYPE_ANY
                    else []
                )
                return _Lookup(RCODE.NOERROR, tuple(found), None, soa)
            by_type = self._names.get(key)
            if by_type is None:
                exists = key == self._origin or any(
                    len(other) > len(key) and _under(other, key) for other in self._names
                )
                rcode = RCODE.NOERROR if exists else RCODE.NXDOMAIN
                return _Lookup(rcode, (), None, soa)
            if qtype == _QTYPE_ANY:
                found = [rr for rrset in by_type.values() for rr in rrset]
                return _Lookup(RCODE.NOERROR, tuple(found), None, soa)
            if qtype in by_type:
                return _Lookup(RCODE.NOERROR, tuple(by_type[qtype]), None, soa)
            cname = by_type.get(_TYPE_CODES["CNAME"])
            if cname:
                return _Lookup(RCODE.NOERROR, tuple(cname), _key(cname[0].rdata.label), soa)
            return _Lookup(RCODE.NOERROR, (), None, soa)


class AuthoritativeResolver:
    """Answers queries from a set of zones (dnslib's resolver seam); thread-safe."""

    def __init__(self, zones: Iterable[DnsZone] = ()) -> None:
        self._zones: dict[_Key, DnsZone] = {}
        self._failing: set[_Key] = set()
        self._lock = threading.Lock()
        for zone in zones:
            self.add_zone(zone)

    # -- zones -------------------------------------------------------------------------

    def add_zone(self, zone: DnsZone | str, *, soa: str | None = None) -> DnsZone:
        """Serve ``zone`` (a DnsZone, or an origin to create an empty zone for); return it.

        Adding an origin that is already served returns the served zone unchanged.
        """
        if isinstance(zone, str):
            key = _key(zone)
            with self._lock:
                served = self._zones.get(key)
                if served is None:
                    served = self._zones[key] = DnsZone(zone, soa=soa)
                return served
        with self._lock:
            self._zones[_key(zone.origin)] = zone
        return zone

    def remove_zone(self, origin: str) -> None:
        """Stop serving the zone at ``origin`` (its names become REFUSED)."""
        with self._lock:
            self._zones.pop(_key(origin), None)

    def zone_for(self, name: str) -> DnsZone | None:
        """The served zone with the longest origin covering ``name``, if any."""
        return self._zone_for_key(_key(name))

    def _zone_for_key(self, key: _Key) -> DnsZone | None:
        with self._lock:
            for start in range(len(key)):
                zone = self._zones.get(key[start:])
                if zone is not None:
                    return zone
        return None

    def zones(self) -> tuple[DnsZone, ...]:
        """The served zones, by origin."""
        with self._lock:
            return tuple(zone for _, zone in sorted(self._zones.items()))

    def _zone_or_error(self, name: str) -> DnsZone:
        zone = self.zone_for(name)
        if zone is None:
            raise ValueError(f"{name!r} is in no served zone; add_zone() first")
        return zone

    # -- records -----------------------------------------------------------------------

    def add(self, name: str, rtype: str, rdata: str, ttl: int = 60) -> DnsRecord:
        """Add one record to the zone covering ``name`` (see DnsZone.add)."""
        return self._zone_or_error(name).add(name, rtype, rdata, ttl)

    def remove(self, name: str, rtype: str | None = None) -> int:
        """Remove records of ``name`` (see DnsZone.remove); a name in no zone: 0."""
        zone = self.zone_for(name)
        return 0 if zone is None else zone.remove(name, rtype)

    def replace(
        self, name: str, rtype: str, rdatas: Iterable[str], ttl: int = 60
    ) -> tuple[DnsRecord, ...]:
        """Replace the name's RRset of ``rtype`` (see DnsZone.replace)."""
        return self._zone_or_error(name).replace(name, rtype, rdatas, ttl)

    def load(self, records: Iterable[DnsRecord]) -> None:
        """Add records; an SOA for an origin not yet served creates that zone."""
        pending = list(records)
        for record in pending:
            if record.rtype == "SOA" and _key(record.name) not in {
                _key(zone.origin) for zone in self.zones()
            }:
                self.add_zone(record.name, soa=record.rdata)
        for record in pending:
            self.add(record.name, record.rtype, record.rdata, record.ttl)

    def load_zone_text(self, text: str, *, origin: str = "", ttl: int = 60) -> None:
        """Load zone-file text; ``origin`` (if given) is served, created if need be."""
        if origin:
            self.add_zone(origin)
        self.load(parse_zone_text(text, origin=origin, ttl=ttl))

    def records(self) -> tuple[DnsRecord, ...]:
        """Every record of every served zone."""
        return tuple(record for zone in self.zones() for record in zone.records())

    def set_failing(self, name: str, failing: bool = True) -> None:
        """Make queries touching ``name`` answer SERVFAIL (or stop doing so)."""
        with self._lock:
            if failing:
                self._failing.add(_key(name))
            else:
                self._failing.discard(_key(name))

    # -- answering ---------------------------------------------------------------------

    def answer(self, request: Any) -> Any:
        """Build the reply (a dnslib DNSRecord) to one parsed query."""
        reply = request.reply(ra=0, aa=1)
        question = request.q
        if request.header.opcode != _OPCODE_QUERY:
            reply.header.rcode = RCODE.NOTIMP
            return reply
        if question.qclass not in (_CLASS_IN, _CLASS_ANY):
            reply.header.rcode = RCODE.REFUSED
            reply.header.aa = 0
            return reply
        qtype = int(question.qtype)
        key = _key(question.qname)
        owner: Any = question.qname  # the first answer echoes the question's spelling
        for _hop in range(MAX_CNAME_CHAIN + 1):
            with self._lock:
                failing = key in self._failing
            if failing:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            zone = self._zone_for_key(key)
            if zone is None:  # out of our zones: refuse, or end a CNAME chain here
                if owner is question.qname:
                    reply.header.rcode = RCODE.REFUSED
                    reply.header.aa = 0
                return reply
            found = zone.lookup(key, qtype)
            for rr in found.answers:
                reply.add_answer(
                    RR(rname=owner, rtype=rr.rtype, rclass=rr.rclass, ttl=rr.ttl, rdata=rr.rdata)
                )
            if found.cname_target is None:
                reply.header.rcode = found.rcode
                if not found.answers:
                    reply.add_auth(found.soa)
                return reply
            key = found.cname_target
            owner = _text(key)
        return reply  # chain too long: the client sees a dangling CNAME

    def resolve(self, request: Any, handler: Any) -> Any:
        """dnslib's hook: answer, and never let an exception kill the reply."""
        try:
            return self.answer(request)
        except Exception:
            logging.getLogger(__name__).exception("DNS answer failed for %s", request.q)
            reply = request.reply(ra=0, aa=1)
            reply.header.rcode = RCODE.SERVFAIL
            return reply


# -- sockets ---------------------------------------------------------------------------


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


class _UdpServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
    # Unlike dnslib's UDPServer: no SO_REUSEADDR, which on UDP would let two servers
    # share a port silently; daemon request threads so stop() never waits on a client.
    daemon_threads = True
    block_on_close = False

    def __init__(self, server_address: tuple[str, int], handler: Any) -> None:
        self.address_family = _family(server_address[0])
        super().__init__(server_address, handler)


class _TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True  # TIME_WAIT from a previous run must not block the port
    daemon_threads = True
    block_on_close = False

    def __init__(self, server_address: tuple[str, int], handler: Any) -> None:
        self.address_family = _family(server_address[0])
        super().__init__(server_address, handler)


class EmbeddedDnsServer:
    """An AuthoritativeResolver served over UDP and TCP on one loopback address and port.

    Use as a context manager, or ``start()`` / ``stop()``. Record edits go straight to
    the resolver and are visible to the next query.
    """

    def __init__(
        self,
        address: str = "127.0.0.1",
        port: int = 0,
        *,
        resolver: AuthoritativeResolver | None = None,
        zones: Iterable[str] = (),
        log: Callable[[str], None] | None = None,
    ) -> None:
        """Prepare (not bind) a server; ``zones`` are origins to serve empty at first.

        ``log`` receives dnslib's error lines (malformed queries); default: this module's
        logger at WARNING.
        """
        if not ipaddress.ip_address(address).is_loopback:
            raise ValueError(f"{address} is not a loopback address; the lab stays on loopback")
        if not 0 <= port <= 65535:
            raise ValueError(f"bad port {port}")
        self._address = address
        self._requested_port = port
        self.resolver = resolver if resolver is not None else AuthoritativeResolver()
        for origin in zones:
            self.resolver.add_zone(origin)
        self._log = log or logging.getLogger(__name__).warning
        self._servers: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._port: int | None = None
        self._lifecycle = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The listening address."""
        return self._address

    @property
    def port(self) -> int:
        """The bound port (UDP and TCP); only known once started."""
        if self._port is None:
            raise RuntimeError("the DNS server is not started; its port is not bound yet")
        return self._port

    @property
    def nameserver(self) -> tuple[str, int]:
        """``(address, port)`` to give a resolver."""
        return (self._address, self.port)

    @property
    def running(self) -> bool:
        """Whether the server is bound and answering."""
        return self._port is not None

    def _bind(self, port: int) -> list[Any]:
        logger = DNSLogger(log="-request,-reply,-truncated", prefix=False, logf=self._log)
        udp = DNSServer(
            self.resolver,
            address=self._address,
            port=port,
            logger=logger,
            handler=DNSHandler,
            server=_UdpServer,
        )
        bound = int(udp.server.server_address[1])
        try:
            tcp = DNSServer(
                self.resolver,
                address=self._address,
                port=bound,
                logger=logger,
                handler=DNSHandler,
                server=_TcpServer,
            )
        except OSError:
            udp.server.server_close()
            raise
        return [udp, tcp]

    def start(self) -> Self:
        """Bind UDP and TCP on the same port and start answering; return self."""
        with self._lifecycle:
            if self._port is not None:
                raise RuntimeError("the DNS server is already running")
            attempts = _FREE_PORT_ATTEMPTS if self._requested_port == 0 else 1
            for attempt in range(attempts):
                try:
                    self._servers = self._bind(self._requested_port)
                    break
                except OSError:
                    if attempt == attempts - 1:
                        raise
            for server in self._servers:
                thread = threading.Thread(
                    target=server.server.serve_forever,
                    kwargs={"poll_interval": _POLL_INTERVAL},
                    name=f"dns-{self._address}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
            self._port = int(self._servers[0].server.server_address[1])
        return self

    def stop(self) -> None:
        """Stop answering and close the sockets; stopping a stopped server does nothing."""
        with self._lifecycle:
            for server in self._servers:
                server.server.shutdown()
                server.server.server_close()
            for thread in self._threads:
                thread.join()
            self._servers, self._threads, self._port = [], [], None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- records (delegated to the resolver) ---------------------------------------------

    def add_zone(self, zone: DnsZone | str, *, soa: str | None = None) -> DnsZone:
        """Serve a zone (see AuthoritativeResolver.add_zone)."""
        return self.resolver.add_zone(zone, soa=soa)

    def add(self, name: str, rtype: str, rdata: str, ttl: int = 60) -> DnsRecord:
        """Add one record, e.g. ``add("example.com", "MX", "10 mx.example.com.")``."""
        return self.resolver.add(name, rtype, rdata, ttl)

    def remove(self, name: str, rtype: str | None = None) -> int:
        """Remove a name's records of one type, or all of them; return how many."""
        return self.resolver.remove(name, rtype)

    def replace(
        self, name: str, rtype: str, rdatas: Iterable[str], ttl: int = 60
    ) -> tuple[DnsRecord, ...]:
        """Atomically replace a name's RRset of one type."""
        return self.resolver.replace(name, rtype, rdatas, ttl)

    def load_zone_text(self, text: str, *, origin: str = "", ttl: int = 60) -> None:
        """Load zone-file text (see AuthoritativeResolver.load_zone_text)."""
        self.resolver.load_zone_text(text, origin=origin, ttl=ttl)

    def set_failing(self, name: str, failing: bool = True) -> None:
        """Answer SERVFAIL for ``name`` (to test temporary DNS failures)."""
        self.resolver.set_failing(name, failing)

    def records(self) -> tuple[DnsRecord, ...]:
        """Every record served."""
        return self.resolver.records()
