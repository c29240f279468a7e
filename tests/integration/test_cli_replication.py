"""The replication commands of the CLI: connectors, request-now, status, pending, KCC, and
`directory list`, with their exit codes for bad input and unknown objects."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner, Result

from sitemail.admin.service import AdminService
from sitemail.main import cli

runner = CliRunner()


def run(*args: str | Path) -> Result:
    return runner.invoke(cli.app, [str(a) for a in args])


def make_site(root: Path, name: str) -> AdminService:
    return AdminService.init(
        root / name,
        org="ExchangeORG",
        site=name,
        server=f"Server{name[-1]}",
        domain=f"{name.lower()}.example.com",
        listen=["127.0.0.1"],
    )


def test_cli_site_key_prints_the_peer_key_form_first(site_a: AdminService) -> None:
    """`site key`: the public key alone on line 1 (what --peer-key takes), then the fingerprint."""
    lines = run("site", "key", "-D", site_a.config.data_dir).stdout.splitlines()
    assert lines[0].startswith("ed25519:")
    assert lines[1].startswith("SHA256:")


def test_cli_connector_add_list_remove(site_a: AdminService, tmp_path: Path) -> None:
    """A connector pins the peer key; duplicates, bad keys and schedules, unknown ones fail."""
    b = make_site(tmp_path, "SiteB")
    key = run("site", "key", "-D", b.config.data_dir).stdout.splitlines()[0]
    d = site_a.config.data_dir
    base = ("replication", "connector", "add", "SiteB", "--bridgehead", "ServerB")
    added = run(*base, "--routing-address", "@SiteB.example.com", "--peer-key", key, "-D", d)
    assert added.exit_code == 0, added.output
    assert run(*base, "--routing-address", "x.test", "--peer-key", key, "-D", d).exit_code == 73
    listed = json.loads(run("replication", "connector", "list", "--json", "-D", d).stdout)
    assert listed == [
        {
            "site": "SiteB",
            "bridgehead": "ServerB",
            "routing_address": "siteb.example.com",
            "peer_key": key,
            "fingerprint": b.site_key()[1],
            "schedule": "180",
        }
    ]
    other = ("replication", "connector", "add", "SiteC", "--bridgehead", "ServerC")
    bad_key = run(*other, "--routing-address", "c.test", "--peer-key", "ed25519:AAAA", "-D", d)
    assert bad_key.exit_code == 65
    assert "32 bytes" in bad_key.output
    bad_schedule = run(
        *other, "--routing-address", "c.test", "--peer-key", key, "--schedule", "often", "-D", d
    )
    assert bad_schedule.exit_code == 65
    ourselves = ("replication", "connector", "add", "SiteA", "--bridgehead", "ServerA")
    assert (
        run(*ourselves, "--routing-address", "a.test", "--peer-key", key, "-D", d).exit_code == 65
    )
    assert run("replication", "connector", "remove", "SiteB", "-D", d).exit_code == 0
    assert run("replication", "connector", "remove", "SiteB", "-D", d).exit_code == 66


def test_cli_connector_set_changes_schedule_and_addresses_never_the_key(
    site_a: AdminService, tmp_path: Path
) -> None:
    b = make_site(tmp_path, "SiteB")
    key = run("site", "key", "-D", b.config.data_dir).stdout.splitlines()[0]
    d = site_a.config.data_dir
    run("replication", "connector", "add", "SiteB", "--bridgehead", "ServerB",
        "--routing-address", "siteb.example.com", "--peer-key", key, "-D", d)  # fmt: skip
    changed = run("replication", "connector", "set", "SiteB", "--schedule", "Always",
                  "--bridgehead", "ServerB2", "-D", d)  # fmt: skip
    assert changed.exit_code == 0, changed.output
    [c] = json.loads(run("replication", "connector", "list", "--json", "-D", d).stdout)
    assert (c["schedule"], c["bridgehead"], c["routing_address"], c["peer_key"]) == (
        "always",
        "ServerB2",
        "siteb.example.com",
        key,
    )
    assert run("replication", "connector", "set", "SiteB", "-D", d).exit_code == 64
    assert (
        run("replication", "connector", "set", "SiteB", "--schedule", "often", "-D", d).exit_code
        == 65
    )
    assert (
        run("replication", "connector", "set", "SiteB", "--peer-key", key, "-D", d).exit_code == 2
    )
    assert (
        run("replication", "connector", "set", "SiteZ", "--schedule", "60", "-D", d).exit_code == 66
    )


def test_cli_request_now_queues_once_and_status_shows_waiting(
    site_a: AdminService, tmp_path: Path
) -> None:
    """request-now queues one request; a second one waits for its answer (no pile-up)."""
    b = make_site(tmp_path, "SiteB")
    d = site_a.config.data_dir
    assert run("replication", "request-now", "SiteB", "-D", d).exit_code == 66
    site_a.replication.add_connector(
        "SiteB", bridgehead="ServerB", routing_address="siteb.example.com", peer_key=b.site_key()[0]
    )
    first = run("replication", "request-now", "SiteB", "-D", d)
    assert first.exit_code == 0
    assert "request #1 queued" in first.stdout
    second = run("replication", "request-now", "SiteB", "-D", d)
    assert "waiting" in second.stdout
    queued = site_a.queue.entries()
    assert [r.address for e in queued for r in e.recipients] == ["sitemail-dsa@siteb.example.com"]
    assert queued[0].sender == ""  # replication mail never causes a DSN
    status = json.loads(run("replication", "status", "--json", "-D", d).stdout)
    peer = status["peers"][0]
    assert (peer["peer"], peer["waiting"], peer["requests_sent"]) == ("SiteB", True, 1)
    refresh = run("replication", "request-now", "SiteB", "--refresh-all", "-D", d)
    assert "refresh-all request #2 queued" in refresh.stdout
    assert "waiting for the answer to request #2" in run("replication", "status", "-D", d).stdout


def test_cli_pending_list_accept_reject_unknown(site_a: AdminService) -> None:
    """Unknown pending partners are exit 66; the empty list says so."""
    d = site_a.config.data_dir
    assert "0 pending partner(s)" in run("replication", "pending", "list", "-D", d).stdout
    assert run("replication", "pending", "accept", "SiteX", "-D", d).exit_code == 66
    assert run("replication", "pending", "reject", "SiteX", "-D", d).exit_code == 66


def test_cli_kcc_warns_about_unknown_site_and_one_sided_connector(
    site_a: AdminService, tmp_path: Path
) -> None:
    """A connector naming no known site is reported with how to fix it."""
    b = make_site(tmp_path, "SiteB")
    d = site_a.config.data_dir
    site_a.replication.add_connector(
        "SiteB", bridgehead="ServerB", routing_address="siteb.example.com", peer_key=b.site_key()[0]
    )
    site_a.add_domain_route("loop.example.com", "127.0.0.1")
    report = json.loads(run("kcc", "check-now", "--json", "-D", d).stdout)
    codes = {w["code"] for w in report["warnings"]}
    assert codes == {"unknown-site", "routing-loop"}
    assert [s["name"] for s in report["sites"]] == ["SiteA"]
    text = run("kcc", "check-now", "-D", d).stdout
    assert "fix:" in text


def test_cli_directory_list_by_site(site_a: AdminService) -> None:
    """`directory list` shows own objects with site and USN; an unknown site is exit 66."""
    d = site_a.config.data_dir
    listed = json.loads(run("directory", "list", "--json", "-D", d).stdout)
    kinds = {o["kind"] for o in listed}
    assert {"site", "server", "site_addressing"} <= kinds
    assert all(o["site"] == "SiteA" and o["usn"] > 0 for o in listed)
    assert run("directory", "list", "--site", "SiteQ", "-D", d).exit_code == 66


def test_cli_connector_add_refuses_what_the_directory_shows_wrong(
    site_a: AdminService, tmp_path: Path
) -> None:
    """Own key, a fingerprint, a case-variant site name and a reused key are refused (65)."""
    b = make_site(tmp_path, "SiteB")
    d = site_a.config.data_dir
    own, own_print = site_a.site_key()
    base = ("replication", "connector", "add", "SiteB", "--bridgehead", "ServerB")
    route = ("--routing-address", "siteb.example.com")
    refused = run(*base, *route, "--peer-key", own, "-D", d)
    assert refused.exit_code == 65
    assert "own key" in refused.output
    fingerprint = run(*base, *route, "--peer-key", own_print, "-D", d)
    assert fingerprint.exit_code == 65
    assert "fingerprint" in fingerprint.output
    case = ("replication", "connector", "add", "sitea", "--bridgehead", "ServerA")
    wrong_case = run(*case, *route, "--peer-key", b.site_key()[0], "-D", d)
    assert wrong_case.exit_code == 65
    assert "did you mean SiteA" in wrong_case.output
    assert run(*base, *route, "--peer-key", b.site_key()[0], "-D", d).exit_code == 0
    other = ("replication", "connector", "add", "SiteC", "--bridgehead", "ServerC")
    reused = run(*other, *route, "--peer-key", b.site_key()[0], "-D", d)
    assert reused.exit_code == 65
    assert "already pinned for SiteB" in reused.output


def test_cli_connector_remove_forgets_the_unanswered_request(
    site_a: AdminService, tmp_path: Path
) -> None:
    """After remove, re-adding the connector can request at once; no request stays queued."""
    b = make_site(tmp_path, "SiteB")
    d = site_a.config.data_dir
    key = b.site_key()[0]
    args = ("--bridgehead", "ServerB", "--routing-address", "siteb.example.com", "--peer-key", key)
    assert run("replication", "connector", "add", "SiteB", *args, "-D", d).exit_code == 0
    assert "queued" in run("replication", "request-now", "SiteB", "-D", d).stdout
    waiting = run("replication", "request-now", "SiteB", "-D", d).stdout
    assert "still in this server's queue" in waiting  # not sent yet: no server runs
    assert run("replication", "connector", "remove", "SiteB", "-D", d).exit_code == 0
    assert site_a.queue.entries() == []
    assert run("replication", "connector", "add", "SiteB", *args, "-D", d).exit_code == 0
    assert "queued" in run("replication", "request-now", "SiteB", "-D", d).stdout
