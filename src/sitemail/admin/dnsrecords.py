"""The DNS records an administrator publishes for the organisation (`sitemail dns records`).

One job: compute, from what this site knows, every record the Internet needs to reach the
organisation and to trust its mail, each as one zone-file line ready to paste:
- MX of each organisation domain, to the servers of the sites that take its mail;
- A (AAAA) of each server's host name, and the PTR its address needs (asked of whoever owns
  the address block: the reverse name must give the host name back);
- SPF (RFC 7208) of each organisation domain, `-all` after every site's address, and of each
  host name (the HELO identity);
- each site's DKIM public keys (RFC 6376), `selector._domainkey.domain`;
- DMARC (RFC 7489) of each organisation domain, with [dns] dmarc_policy and dmarc_rua.

Sources (docs/dns-records.md): the directory's replicated site and server objects (names,
routing domains, listen addresses), Site Addressing and accepted domains; this site's
config ([dns] dmarc_*, [smtp] smart_host); this site's DKIM keys from its data dir (mailauth.dkimkeys); other
sites' DKIM keys from the `dkim` attribute their site object replicates. Nothing here
writes, except `publish_own_dkim`, which puts this site's public keys in its site object.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitemail.config import ServerConfig, split_nameserver
from sitemail.directory import Directory, ObjectKind
from sitemail.directory.ims_objects import list_domains
from sitemail.mailauth.dkimkeys import dkim_public_records

__all__ = [
    "DEFAULT_TTL",
    "DkimKey",
    "PublishedRecord",
    "RecordSet",
    "compute_records",
    "local_dkim_keys",
    "organisation_domains",
    "publish_own_dkim",
    "reverse_name",
]

DEFAULT_TTL = 3600
_TXT_CHUNK = 255  # one character-string of a TXT record holds at most 255 octets
DKIM_ATTR = "dkim"  # the site object's attribute: this site's public keys, replicated


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One DKIM public key record: `selector._domainkey.domain TXT txt`."""

    domain: str
    selector: str
    txt: str


# Reads this site's DKIM public keys from its data dir for the given domains; injected so
# tests can give keys of their own.
DkimSource = Callable[[Path, Sequence[str]], Sequence[DkimKey]]


@dataclass(frozen=True, slots=True)
class PublishedRecord:
    """One record to publish. `value` is the data as DNS returns it (TXT: the strings joined)."""

    name: str  # absolute, lowercase, trailing dot
    rtype: str  # MX, A, AAAA, TXT, PTR
    value: str  # "10 host.", "192.0.2.1", "v=spf1 ...", "host."
    kind: str  # mx, a, ptr, spf, dkim, dmarc: what it is for
    site: str = ""  # the site it belongs to; "" for the organisation's
    ttl: int = DEFAULT_TTL

    def zone_line(self) -> str:
        """The record as one zone-file line (TXT split into quoted 255-octet strings)."""
        data = _txt_data(self.value) if self.rtype == "TXT" else self.value
        return f"{self.name} {self.ttl} IN {self.rtype} {data}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.rtype,
            "value": self.value,
            "kind": self.kind,
            "site": self.site,
            "ttl": self.ttl,
            "zone": self.zone_line(),
        }


@dataclass(frozen=True, slots=True)
class RecordSet:
    records: tuple[PublishedRecord, ...]
    notes: tuple[str, ...]  # what could not be computed here, and where to get it


def _txt_data(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    chunks = [escaped[i : i + _TXT_CHUNK] for i in range(0, len(escaped), _TXT_CHUNK)] or [""]
    return " ".join(f'"{chunk}"' for chunk in chunks)


def _absolute(name: str) -> str:
    return name.strip().lower().rstrip(".") + "."


def reverse_name(address: str) -> str:
    """The in-addr.arpa (ip6.arpa) name of an address, absolute."""
    return ipaddress.ip_address(address).reverse_pointer + "."


@dataclass(frozen=True, slots=True)
class _Server:
    site: str
    host: str  # server.routing-domain, as it names itself in greetings and EHLO
    addresses: tuple[str, ...]  # public (specified) listen addresses


def _servers(directory: Directory) -> list[_Server]:
    domains = {
        s.site: str(s.attrs.get("routing_domain", "")).lower()
        for s in directory.list_objects(ObjectKind.SITE)
    }
    found = []
    for server in directory.list_objects(ObjectKind.SERVER):
        domain = domains.get(server.site, "")
        if not domain:
            continue
        listen = server.attrs.get("listen", [])
        addresses = tuple(
            str(a)
            for a in (listen if isinstance(listen, list) else [])
            if _is_address(str(a)) and not ipaddress.ip_address(str(a)).is_unspecified
        )
        found.append(_Server(server.site, f"{server.alias.lower()}.{domain}", addresses))
    return sorted(found, key=lambda s: (s.site, s.host))


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _domain_holders(directory: Directory) -> dict[str, set[str]]:
    """Each authoritative domain of the organisation with the sites that take its mail: the
    sites addressing recipients there (Site Addressing), whose routing domain it is, or that
    accept it; a domain only proxy addresses use is taken by every site."""
    sites = [s.site for s in directory.list_objects(ObjectKind.SITE)]
    holders: dict[str, set[str]] = {d: set() for d in directory.accepted_domains()}
    relayed = set()
    for entry in list_domains(directory, "*"):
        if entry.internal_relay:
            relayed.add(entry.domain)  # another mail system shares it: its MX is theirs
        else:
            holders.setdefault(entry.domain, set()).add(entry.owner)
    for site in sites:
        for domain in (directory.routing_domain(site), directory.template(site).domain):
            holders.setdefault(domain.lower(), set()).add(site)
    return {d: (h or set(sites)) for d, h in holders.items() if d not in relayed}


def _dkim_of_others(directory: Directory, local: str) -> dict[str, list[DkimKey]]:
    keys: dict[str, list[DkimKey]] = {}
    for site in directory.list_objects(ObjectKind.SITE):
        if site.site == local:
            continue
        raw = site.attrs.get(DKIM_ATTR)
        if not isinstance(raw, list):
            continue
        keys[site.site] = [
            DkimKey(str(k.get("domain", "")), str(k.get("selector", "")), str(k.get("txt", "")))
            for k in raw
            if isinstance(k, dict) and k.get("selector") and k.get("txt")
        ]
    return keys


def _spf(addresses: Iterable[str], extra: Sequence[str] = ()) -> str:
    mechanisms = [
        f"ip{ipaddress.ip_address(a).version}:{a}"
        for a in sorted(set(addresses), key=ipaddress.ip_address)
    ]
    return " ".join(["v=spf1", *mechanisms, *extra, "-all"])


def _smart_host_mechanism(config: ServerConfig) -> list[str]:
    """This site's smart host, which sends its Internet mail, in the organisation's SPF."""
    if not config.smtp.smart_host:
        return []
    host, _ = split_nameserver(config.smtp.smart_host)
    if _is_address(host):
        return [f"ip{ipaddress.ip_address(host).version}:{host}"]
    return [f"a:{host.rstrip('.')}"]


def _dmarc(config: ServerConfig) -> str:
    tags = ["v=DMARC1", f"p={config.dns.dmarc_policy}"]
    if config.dns.dmarc_rua:
        tags.append(f"rua={config.dns.dmarc_rua}")
    return "; ".join(tags)


def compute_records(
    directory: Directory,
    config: ServerConfig,
    dkim_source: DkimSource | None = None,
    *,
    site: str | None = None,
) -> RecordSet:
    """Every record to publish (only those of `site` and the organisation's when given)."""
    servers = _servers(directory)
    holders = _domain_holders(directory)
    domains = sorted(holders)
    records = [
        PublishedRecord(_absolute(domain), "MX", f"10 {server.host}.", "mx", server.site)
        for domain in domains
        for server in servers
        if server.site in holders[domain]
    ]
    notes: list[str] = []
    for server in servers:
        records += _host_records(server)
        if not server.addresses:
            notes.append(
                f"{server.host} listens on no specific address: its A, PTR and SPF entry "
                "cannot be computed ([server] listen)"
            )
    spf = _spf([a for s in servers for a in s.addresses], _smart_host_mechanism(config))
    for domain in domains:
        records.append(PublishedRecord(_absolute(domain), "TXT", spf, "spf"))
        records.append(
            PublishedRecord(f"_dmarc.{_absolute(domain)}", "TXT", _dmarc(config), "dmarc")
        )
    keys, missing = _dkim_keys(directory, config, dkim_source or local_dkim_keys, domains)
    records += keys
    notes += missing
    if site is not None:
        records = [r for r in records if r.site in ("", site)]
        notes = [n for n in notes if site in n]
    return RecordSet(tuple(dict.fromkeys(records)), tuple(notes))


def _host_records(server: _Server) -> list[PublishedRecord]:
    """A (AAAA), PTR and the HELO name's SPF of one server."""
    host = _absolute(server.host)
    found = []
    for address in server.addresses:
        rtype = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
        found.append(PublishedRecord(host, rtype, address, "a", server.site))
        found.append(PublishedRecord(reverse_name(address), "PTR", host, "ptr", server.site))
    if server.addresses:
        found.append(PublishedRecord(host, "TXT", _spf(server.addresses), "spf", server.site))
    return found


def _dkim_keys(
    directory: Directory, config: ServerConfig, source: DkimSource, domains: list[str]
) -> tuple[list[PublishedRecord], list[str]]:
    """Every site's DKIM records (this site's from its data dir, the others' replicated), and
    a note for each site whose keys are not known here."""
    local = directory.local_site
    own = source(config.data_dir, domains)
    found = [_dkim_record(key, local) for key in own]
    notes = [] if own else [f"{local} has no DKIM key yet: `sitemail dkim rotate` makes one"]
    others = _dkim_of_others(directory, local)
    for name in sorted({s.site for s in directory.list_objects(ObjectKind.SITE)} - {local}):
        if others.get(name):
            found += [_dkim_record(key, name) for key in others[name]]
        else:
            notes.append(
                f"{name}'s DKIM keys have not replicated here: `sitemail dns records --site "
                f"{name}` at {name} shows them"
            )
    return found, notes


def _dkim_record(key: DkimKey, site: str) -> PublishedRecord:
    name = f"{key.selector}._domainkey.{_absolute(key.domain)}"
    return PublishedRecord(name, "TXT", key.txt, "dkim", site)


def organisation_domains(directory: Directory) -> list[str]:
    """The domains records are published for (authoritative ones: not internal relays)."""
    return sorted(_domain_holders(directory))


def local_dkim_keys(data_dir: Path, domains: Sequence[str]) -> list[DkimKey]:
    """This site's published DKIM keys (active, next, previous), from its data dir."""
    return [DkimKey(r.domain, r.selector, r.txt) for r in dkim_public_records(data_dir, domains)]


def publish_own_dkim(
    directory: Directory, data_dir: Path, source: DkimSource = local_dkim_keys
) -> bool:
    """Put this site's DKIM public keys in its site object (it replicates, so every site can
    show them); write only when they changed. Whether it wrote."""
    keys = source(data_dir, organisation_domains(directory))
    wanted = [{"domain": k.domain, "selector": k.selector, "txt": k.txt} for k in keys]
    held = directory.site_object().attrs.get(DKIM_ATTR)
    if held == wanted or (held is None and not wanted):
        return False
    directory.update_site_attrs(**{DKIM_ATTR: wanted})
    return True
