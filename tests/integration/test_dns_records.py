"""`sitemail dns records` and the doctor's check of them, against a real DNS server on loopback.

A site made by `init` (its DKIM keys with it) prints its records; they are loaded, as an
admin would paste them, into the embedded DNS server on 127.34.0.53; the check finds them all
published, then names one broken record with the line that mends it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import dns.rdatatype
import dns.resolver
import dns.reversename
import pytest
from tests.support.org import organisation, replicate, replicated_pair
from typer.testing import CliRunner, Result

from sitemail.admin.dnscheck import check_records
from sitemail.admin.dnsrecords import RecordSet, compute_records, publish_own_dkim
from sitemail.admin.service import AdminService
from sitemail.lab.dns_server import EmbeddedDnsServer
from sitemail.main import cli

ADDRESS = "127.0.0.1"  # site_a's listen address
DNS_ADDRESS = "127.34.0.53"
runner = CliRunner()


def run(*args: str | Path) -> Result:
    return runner.invoke(cli.app, [str(a) for a in args])


@pytest.fixture
def site(site_a: AdminService) -> AdminService:
    """SiteA (tests/conftest.py), listening on 127.0.0.1."""
    return site_a


@pytest.fixture
def published(site: AdminService) -> Iterator[tuple[EmbeddedDnsServer, list[str]]]:
    """The site's records pasted into a loopback DNS server: (server, zone lines)."""
    shown = run("dns", "records", "-D", site.config.data_dir)
    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.stdout.splitlines() if line and not line.startswith(";")]
    with EmbeddedDnsServer(DNS_ADDRESS, 0) as server:
        for origin in ("example.com", "0.0.127.in-addr.arpa"):
            server.add_zone(origin)
        server.load_zone_text("\n".join(lines))
        yield server, lines


def verdicts(site: AdminService, server: EmbeddedDnsServer) -> list[tuple[str, str, str]]:
    records = compute_records(site.directory, site.config).records
    found = asyncio.run(check_records(records, [server.nameserver], 2.0))
    return [(str(v.status), v.message, v.fix) for v in found]


def test_dns_records_lists_every_kind_ready_to_paste(site: AdminService) -> None:
    """MX, A, PTR, SPF (domain and HELO name), both DKIM keys and DMARC, as zone lines."""
    shown = json.loads(run("dns", "records", "--json", "-D", site.config.data_dir).stdout)
    zone = {r["zone"] for r in shown["records"]}
    assert "sitea.example.com. 3600 IN MX 10 servera.sitea.example.com." in zone
    assert f"servera.sitea.example.com. 3600 IN A {ADDRESS}" in zone
    assert "1.0.0.127.in-addr.arpa. 3600 IN PTR servera.sitea.example.com." in zone
    assert f'sitea.example.com. 3600 IN TXT "v=spf1 ip4:{ADDRESS} -all"' in zone
    assert f'servera.sitea.example.com. 3600 IN TXT "v=spf1 ip4:{ADDRESS} -all"' in zone
    assert '_dmarc.sitea.example.com. 3600 IN TXT "v=DMARC1; p=quarantine"' in zone
    dkim = {r["name"]: r for r in shown["records"] if r["kind"] == "dkim"}
    assert set(dkim) == {
        "sitea._domainkey.sitea.example.com.",
        "sitea-ed25519._domainkey.sitea.example.com.",
    }
    rsa = dkim["sitea._domainkey.sitea.example.com."]
    assert len(rsa["value"]) > 255  # RSA-2048: split into quoted strings of 255 at most
    assert rsa["zone"].count('" "') >= 1
    assert shown["notes"] == []


def test_dns_records_takes_the_configured_dmarc_policy_and_reports(
    site: AdminService,
) -> None:
    """[dns] dmarc_policy and dmarc_rua shape the DMARC record; a bad policy is refused."""
    config = site.config.data_dir / "sitemail.toml"
    text = config.read_text()
    config.write_text(
        text.replace("\n[dns]\n", '\n[dns]\ndmarc_policy = "reject"\n'
                     'dmarc_rua = "mailto:dmarc@example.com"\n', 1)
    )  # fmt: skip
    shown = run("dns", "records", "-D", site.config.data_dir).stdout
    assert "v=DMARC1; p=reject; rua=mailto:dmarc@example.com" in shown
    config.write_text(text.replace("\n[dns]\n", '\n[dns]\ndmarc_policy = "block"\n', 1))
    refused = run("dns", "records", "-D", site.config.data_dir)
    assert refused.exit_code == 78
    assert "dmarc_policy" in refused.output
    assert "Traceback" not in refused.output


def test_dns_records_of_an_unknown_site_is_refused(site: AdminService) -> None:
    """--site names a site of the directory, else exit 66 with the known ones."""
    refused = run("dns", "records", "--site", "SiteZ", "-D", site.config.data_dir)
    assert refused.exit_code == 66
    assert "SiteA" in refused.output


def test_dns_records_all_published_are_found_ok(
    site: AdminService, published: tuple[EmbeddedDnsServer, list[str]]
) -> None:
    """Every record pasted as printed checks out against the name server."""
    server, _ = published
    found = verdicts(site, server)
    assert found
    assert [v for v in found if v[0] != "ok"] == []
    answer = dns.resolver.Resolver(configure=False)
    answer.nameservers, answer.port = [DNS_ADDRESS], server.port
    ptr = answer.resolve(dns.reversename.from_address(ADDRESS), dns.rdatatype.PTR)
    assert [r.to_text() for r in ptr] == ["servera.sitea.example.com."]


def test_dns_records_a_wrong_dkim_key_is_named_with_its_fix(
    site: AdminService, published: tuple[EmbeddedDnsServer, list[str]]
) -> None:
    """Another key at the RSA selector: one error, whose fix is the line to publish."""
    server, lines = published
    name = "sitea._domainkey.sitea.example.com."
    right = next(line for line in lines if line.startswith(name))
    server.replace(
        name, "TXT", ['"v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwrong"']
    )
    problems = [v for v in verdicts(site, server) if v[0] != "ok"]
    assert problems == [
        (
            "error",
            f"DKIM {name}: publishes another key than SiteA's: its signatures fail",
            right,
        )
    ]


def test_dns_records_missing_and_uncovering_records_are_named(
    site: AdminService, published: tuple[EmbeddedDnsServer, list[str]]
) -> None:
    """No PTR, and an SPF record without the site's address: both errors with their lines."""
    server, _ = published
    server.remove("1.0.0.127.in-addr.arpa", "PTR")
    server.replace("sitea.example.com", "TXT", ['"v=spf1 ip4:192.0.2.1 -all"'])
    problems = {v[1]: v for v in verdicts(site, server) if v[0] != "ok"}
    assert set(problems) == {
        "PTR 1.0.0.127.in-addr.arpa.: no PTR record published",
        f'SPF sitea.example.com.: "v=spf1 ip4:192.0.2.1 -all" does not list {ADDRESS}: '
        "its mail fails SPF",
    }
    assert all(v[0] == "error" for v in problems.values())
    assert problems["PTR 1.0.0.127.in-addr.arpa.: no PTR record published"][2] == (
        "1.0.0.127.in-addr.arpa. 3600 IN PTR servera.sitea.example.com."
    )


def test_dns_records_unanswered_queries_are_errors_not_tracebacks(site: AdminService) -> None:
    """A name server that refuses (no zone for the names): every record an error saying so."""
    with EmbeddedDnsServer(DNS_ADDRESS, 0) as server:
        found = verdicts(site, server)
    assert found
    assert {v[0] for v in found} == {"error"}
    assert all("did not answer" in v[1] for v in found)


def test_dns_records_leave_out_internal_relay_domains_and_add_the_smart_host(
    site: AdminService,
) -> None:
    """A domain shared with another mail system gets no records (its MX is theirs); an
    accepted domain gets them all; this site's smart host is in every domain's SPF."""
    data_dir = site.config.data_dir
    assert run("domain", "add", "owned.test", "-D", data_dir).exit_code == 0
    shared = run(
        "domain", "add", "shared.test", "--internal-relay", "--forward-unresolved",
        "192.0.2.25", "-D", data_dir,
    )  # fmt: skip
    assert shared.exit_code == 0, shared.output
    config = data_dir / "sitemail.toml"
    config.write_text(
        config.read_text().replace("\n[smtp]\n", '\n[smtp]\nsmart_host = "192.0.2.99:587"\n', 1)
    )
    shown = json.loads(run("dns", "records", "--json", "-D", data_dir).stdout)["records"]
    names = {r["name"] for r in shown}
    assert "owned.test." in names
    assert "_dmarc.owned.test." in names
    assert not any(name.endswith("shared.test.") for name in names)
    spf = next(r["value"] for r in shown if r["name"] == "owned.test." and r["kind"] == "spf")
    assert spf == f"v=spf1 ip4:{ADDRESS} ip4:192.0.2.99 -all"


def test_dns_records_show_another_sites_dkim_keys_once_replicated(tmp_path: Path) -> None:
    """SiteA puts its public keys in its site object (once: unchanged keys are not written
    again); SiteB, having replicated, prints them beside its own."""

    async def scenario() -> RecordSet:
        addresses = {"SiteA": "127.34.0.10", "SiteB": "127.34.0.15"}
        async with organisation(tmp_path, addresses) as org:
            a, b = await replicated_pair(org)
            assert publish_own_dkim(a.service.directory, a.data_dir)
            assert not publish_own_dkim(a.service.directory, a.data_dir)
            await replicate([(a, b)])
            return compute_records(b.service.directory, b.service.config)

    found = asyncio.run(scenario())
    dkim = {(r.name, r.site) for r in found.records if r.kind == "dkim"}
    assert ("sitea._domainkey.sitea.example.com.", "SiteA") in dkim
    assert ("siteb._domainkey.siteb.example.com.", "SiteB") in dkim
    assert [n for n in found.notes if "DKIM" in n] == []
