"""`sitemail site remove` as the CLI renders it (in-process, CliRunner): the dry run's list,
the JSON report, and the refusals, on data dirs configured as the article does (no server
runs: the removal is the directory's; tests/integration/replication/test_site_remove.py
runs it between live sites)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.org import Org
from typer.testing import CliRunner

from sitemail.admin.cli import app

ADDRESSES = {"SiteA": "127.37.1.11", "SiteB": "127.37.1.12", "SiteC": "127.37.1.13"}
runner = CliRunner()


def configured(tmp_path: Path) -> Org:
    """SiteA with a connector, a connected site and a domain route to SiteB and SiteC."""
    org = Org(tmp_path, addresses=dict(ADDRESSES))
    a, b, c = (org.create(name) for name in ("SiteA", "SiteB", "SiteC"))
    for other in (b, c):
        org.connect(a, other)
        org.link(a, other)
    return org


def test_cli_site_remove_dry_run_lists_and_changes_nothing_then_removes(tmp_path: Path) -> None:
    """--dry-run lists the connector, the entry and the route and changes nothing; the real
    run removes them (SiteC's stay) and says so in --json; a second run finds nothing."""
    org = configured(tmp_path)
    data_dir = str(org.sites["SiteA"].data_dir)
    try:
        dry = runner.invoke(app, ["site", "remove", "SiteB", "--dry-run", "-D", data_dir])
        assert dry.exit_code == 0, dry.stderr
        port = org.sites["SiteB"].port
        assert dry.stdout.splitlines() == [
            "would remove: replication connector to SiteB (its key)",
            "would remove: connected site SiteB via siteb.example.com",
            f"would remove: domain route siteb.example.com -> 127.37.1.12:{port}",
            "would remove: SiteB's replica here (0 object(s), 0 proxy address(es)) and its "
            "replication records",
            "dry run: nothing was changed",
        ]
        done = runner.invoke(app, ["site", "remove", "SiteB", "--json", "-D", data_dir])
        assert done.exit_code == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["dry_run"] is False
        assert report["connector"] == report["connected_site"] == "SiteB"
        assert [r["domain"] for r in report["domain_routes"]] == ["siteb.example.com"]
        service = org.sites["SiteA"].service
        assert [c.site for c in service.replication.list_connectors()] == ["SiteC"]
        assert [r.domain for r in service.list_domain_routes()] == ["sitec.example.com"]
        again = runner.invoke(app, ["site", "remove", "SiteB", "--json", "-D", data_dir])
        assert json.loads(again.stdout)["domain_routes"] == []
    finally:
        for site in org.sites.values():
            site.service.close()


def test_cli_site_remove_refuses_this_site_and_an_unknown_one(tmp_path: Path) -> None:
    """This site (exit 65) and a site nobody knows (exit 66): one error line each."""
    org = configured(tmp_path)
    data_dir = str(org.sites["SiteA"].data_dir)
    try:
        for site, code in (("SiteA", 65), ("SiteZ", 66)):
            refused = runner.invoke(app, ["site", "remove", site, "-D", data_dir])
            assert refused.exit_code == code, refused.stderr
            errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1
            assert refused.stdout == ""
    finally:
        for site in org.sites.values():
            site.service.close()
