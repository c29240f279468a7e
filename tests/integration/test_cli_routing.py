"""The routing commands of the CLI: connected-site, domain, routing table, route explain."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner, Result

from sitemail.admin.routing import certificate_fingerprint
from sitemail.admin.service import AdminService
from sitemail.main import cli

runner = CliRunner()


def run(*args: str | Path) -> Result:
    return runner.invoke(cli.app, [str(a) for a in args])


def test_cli_connected_site_add_list_remove(site_a: AdminService) -> None:
    """An unknown site is accepted with a warning; '@' is dropped; bad values are refused
    with exit 65, a duplicate with 73, an unknown entry on remove with 66."""
    d = site_a.config.data_dir
    added = run(
        "connected-site", "add", "SiteB", "--routing-address", "@SiteB.example.com", "-D", d
    )
    assert added.exit_code == 0
    assert "siteb.example.com" in added.stdout
    assert "no site named SiteB is known here yet" in added.stderr
    listed = json.loads(run("connected-site", "list", "--json", "-D", d).stdout)
    assert listed == [
        {
            "site": "SiteB",
            "routing_address": "siteb.example.com",
            "cost": 1,
            "tls_fingerprint": None,
            "owner": "SiteA",
            "known": False,
        }
    ]
    again = run("connected-site", "add", "SiteB", "--routing-address", "x.example", "-D", d)
    assert again.exit_code == 73
    for bad in (
        ["SiteC", "--routing-address", "not a domain"],
        ["SiteC", "--routing-address", "c.example", "--cost", "101"],
        ["SiteC", "--routing-address", "c.example", "--tls-fingerprint", "SHA256:abc"],
        ["SiteA", "--routing-address", "a.example"],
        ["Site C", "--routing-address", "c.example"],
        ["sitea", "--routing-address", "a.example"],
    ):
        result = run("connected-site", "add", *bad, "-D", d)
        assert result.exit_code == 65, (bad, result.output)
        assert "Traceback" not in result.output
    assert run("connected-site", "remove", "SiteB", "-D", d).exit_code == 0
    assert run("connected-site", "remove", "SiteB", "-D", d).exit_code == 66


def test_cli_connected_site_set_changes_only_what_is_given(site_a: AdminService) -> None:
    """`connected-site set`: cost, routing address and pin change in place (the entry's
    version goes up, so the change replicates); nothing given, bad values, unknown: refused."""
    d = site_a.config.data_dir
    run("connected-site", "add", "SiteB", "--routing-address", "siteb.example.com", "-D", d)
    pin = "ab" * 32
    changed = run(
        "connected-site", "set", "SiteB", "--cost", "7", "--tls-fingerprint", pin, "-D", d
    )
    assert changed.exit_code == 0, changed.output
    assert "cost 7, TLS pinned" in changed.stdout
    [entry] = json.loads(run("connected-site", "list", "--json", "-D", d).stdout)
    assert (entry["routing_address"], entry["cost"], entry["tls_fingerprint"]) == (
        "siteb.example.com",
        7,
        pin,
    )
    moved = run("connected-site", "set", "SiteB", "--routing-address", "@b2.example.com",
                "--tls-fingerprint", "", "-D", d)  # fmt: skip
    assert moved.exit_code == 0
    [entry] = json.loads(run("connected-site", "list", "--json", "-D", d).stdout)
    assert (entry["routing_address"], entry["cost"], entry["tls_fingerprint"]) == (
        "b2.example.com",
        7,
        None,
    )
    assert run("connected-site", "set", "SiteB", "-D", d).exit_code == 64
    assert run("connected-site", "set", "SiteB", "--cost", "0", "-D", d).exit_code == 65
    assert run("connected-site", "set", "SiteZ", "--cost", "2", "-D", d).exit_code == 66


def test_cli_domain_add_list_remove(site_a: AdminService) -> None:
    d = site_a.config.data_dir
    assert run("domain", "add", "Example.com", "-D", d).exit_code == 0
    relay = run(
        "domain", "add", "shared.example", "--internal-relay", "--forward-unresolved",
        "mail.other.example:2525", "-D", d,
    )  # fmt: skip
    assert relay.exit_code == 0
    listed = json.loads(run("domain", "list", "--json", "-D", d).stdout)
    assert {(e["domain"], e["type"], e["forward_unresolved"]) for e in listed} == {
        ("example.com", "authoritative", None),
        ("shared.example", "internal_relay", "mail.other.example:2525"),
    }
    assert run("domain", "add", "example.com", "-D", d).exit_code == 73
    assert run("domain", "add", "x.example", "--internal-relay", "-D", d).exit_code == 65
    assert (
        run("domain", "add", "x.example", "--forward-unresolved", "h.example", "-D", d).exit_code
        == 65
    )
    assert run("domain", "remove", "example.com", "-D", d).exit_code == 0
    assert run("domain", "remove", "example.com", "-D", d).exit_code == 66
    assert run("domain", "remove", "not..valid", "-D", d).exit_code == 65


def test_cli_routing_table_and_route_explain(site_a: AdminService) -> None:
    d = site_a.config.data_dir
    run("connected-site", "add", "SiteB", "--routing-address", "siteb.example.com", "-D", d)
    run("domain-route", "add", "siteb.example.com", "127.10.10.15", "-D", d)
    run("domain", "add", "example.com", "-D", d)
    table = json.loads(run("routing", "table", "--json", "-D", d).stdout)
    assert table["sites"][0]["path"] == ["SiteA", "SiteB"]
    assert "example.com" in table["accepted_domains"]
    text = run("routing", "table", "-D", d).stdout
    assert "SiteB" in text
    assert "siteb.example.com" in text
    explained = run("route", "explain", "nobody@example.com", "--from", "<>", "-D", d)
    assert explained.exit_code == 0
    assert "authoritative" in explained.stdout
    assert "550" not in explained.stdout or "5.1.1" in explained.stdout
    assert "never reported back" in explained.stdout
    relay = json.loads(run("route", "explain", "x@far.example", "--json", "-D", d).stdout)
    assert (relay["transport"], relay["rule"]) == ("mx", "mx")
    assert "5.7.1" in relay["smtp_policy"]
    assert run("route", "explain", "", "-D", d).exit_code == 65
    assert run("route", "explain", "a@b.example", "--from", "bad@@x", "-D", d).exit_code == 65


def test_cli_route_explain_says_a_domain_route_to_this_server_would_bounce(
    site_a: AdminService,
) -> None:
    d = site_a.config.data_dir
    own = site_a.config.listen[0]
    run("domain-route", "add", "loop.example.net", own, "-D", d)
    explained = run("route", "explain", "x@loop.example.net", "-D", d)
    assert explained.exit_code == 0
    assert f"{own} is this server: the message would bounce with 5.4.6" in explained.stdout
    run("domain-route", "add", "far.example.net", "127.10.10.99", "-D", d)
    assert "is this server" not in run("route", "explain", "x@far.example.net", "-D", d).stdout


def test_cli_site_show_prints_the_certificate_fingerprint(site_a: AdminService) -> None:
    shown = json.loads(run("site", "show", "--json", "-D", site_a.config.data_dir).stdout)
    assert shown["tls_fingerprint"] == certificate_fingerprint(site_a.config)
    assert len(shown["tls_fingerprint"]) == 64
