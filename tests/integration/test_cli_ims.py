"""The IMS commands of the CLI: domain routes, the queue, tracking, and `serve` start-up errors."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from tests.support.serve import serve_until_it_exits
from typer.testing import CliRunner, Result

from sitemail.admin.service import AdminService
from sitemail.core.clock import SystemClock
from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.main import cli
from sitemail.queue.content import Content
from sitemail.queue.records import NewMessage
from sitemail.queue.spool import Spool

runner = CliRunner()


def run(*args: str | Path) -> Result:
    return runner.invoke(cli.app, [str(a) for a in args])


def queue_one(service: AdminService) -> str:
    """Queue a message through the real spool (as an SMTP session would)."""
    envelope = Envelope("a@outside.test", (EnvelopeRecipient("x@partner.test"),))
    content = b"Subject: q\r\nMessage-ID: <q1@test>\r\n\r\nbody\r\n"
    spool = Spool(service.store, SystemClock(), "SiteA")
    return asyncio.run(spool.enqueue(NewMessage(envelope, Content.of(content))))


def test_cli_domain_route_add_list_remove(site_a: AdminService) -> None:
    """Routes are added (with '#' for exact), listed as JSON, removed; bad input is refused."""
    data_dir = site_a.config.data_dir
    assert (
        run("domain-route", "add", "SiteB.Example.com", "127.10.10.15", "-D", data_dir).exit_code
        == 0
    )
    assert (
        run("domain-route", "add", "#example.net", "mx.example.net:2525", "-D", data_dir).exit_code
        == 0
    )
    listed = json.loads(run("domain-route", "list", "--json", "-D", data_dir).stdout)
    assert {(r["domain"], r["host"]) for r in listed} == {
        ("siteb.example.com", "127.10.10.15"),
        ("#example.net", "mx.example.net:2525"),
    }
    duplicate = run("domain-route", "add", "siteb.example.com", "127.0.0.1", "-D", data_dir)
    assert duplicate.exit_code == 73
    bad_host = run("domain-route", "add", "x.test", "not a host", "-D", data_dir)
    assert bad_host.exit_code == 65
    assert run("domain-route", "remove", "siteb.example.com", "-D", data_dir).exit_code == 0
    assert run("domain-route", "remove", "siteb.example.com", "-D", data_dir).exit_code == 66


def test_cli_domain_route_refuses_an_address_that_is_no_ip_address(site_a: AdminService) -> None:
    """`999.1.1.1` (or `10.0.0`) is no IP address and no host name: one clear error, exit 65,
    nothing added; a real address and a name with a port are taken."""
    data_dir = site_a.config.data_dir
    for host in ("999.1.1.1", "10.0.0", "[2001:db8::zz]:25"):
        refused = run("domain-route", "add", "x.test", host, "-D", data_dir)
        assert refused.exit_code == 65, refused.stdout
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1
        assert "not an IP address" in errors[0] or "not a host" in errors[0]
    assert json.loads(run("domain-route", "list", "--json", "-D", data_dir).stdout) == []
    assert run("domain-route", "add", "x.test", "192.0.2.1:2525", "-D", data_dir).exit_code == 0


def test_cli_queue_hold_release_retry_delete_and_track(site_a: AdminService) -> None:
    """Queue commands act on a real queued message; tracking shows every admin step."""
    data_dir = site_a.config.data_dir
    queue_id = queue_one(site_a)
    listed = json.loads(run("queue", "list", "--json", "-D", data_dir).stdout)
    assert [m["queue_id"] for m in listed] == [queue_id]
    assert listed[0]["recipients"][0]["state"] == "queued"
    shown = run("queue", "show", queue_id, "-D", data_dir)
    assert shown.exit_code == 0
    assert "Message-ID: <q1@test>" in shown.stdout
    assert run("queue", "hold", queue_id, "-D", data_dir).exit_code == 0
    assert json.loads(run("queue", "list", "--json", "-D", data_dir).stdout)[0]["held"] is True
    assert run("queue", "release", queue_id, "-D", data_dir).exit_code == 0
    assert "1 recipient(s) due now" in run("queue", "retry", "-D", data_dir).stdout
    assert run("queue", "delete", queue_id, "-D", data_dir).exit_code == 0
    assert json.loads(run("queue", "list", "--json", "-D", data_dir).stdout) == []
    events = json.loads(run("track", "<q1@test>", "--json", "-D", data_dir).stdout)
    assert [e["event"] for e in events] == ["received", "held", "released", "deleted"]
    assert run("queue", "delete", queue_id, "-D", data_dir).exit_code == 66
    assert run("track", "<nothing@test>", "-D", data_dir).exit_code == 66


def test_cli_track_all_sites_without_a_running_server(site_a: AdminService, tmp_path: Path) -> None:
    """`track --all-sites` alone: this site's events and "no other site to ask"; with a
    connector to SiteB but no server running here: the query waits in the queue, and the
    command says so instead of waiting; bad combinations and unknown ids exit as usual."""
    data_dir = site_a.config.data_dir
    queue_id = queue_one(site_a)
    alone = run("track", queue_id, "--all-sites", "-D", data_dir)
    assert alone.exit_code == 0, alone.output
    assert f"SiteA    {queue_id}  received" in alone.stdout
    assert "no other site to ask: the events of SiteA only" in alone.stdout
    peer = AdminService.init(
        tmp_path / "SiteB",
        org="ExchangeORG",
        site="SiteB",
        server="ServerB",
        domain="siteb.example.com",
        listen=["127.0.0.2"],
    )
    site_a.replication.add_connector(
        "SiteB",
        bridgehead="ServerB",
        routing_address="siteb.example.com",
        peer_key=peer.site_key()[0],
        schedule="never",
    )
    peer.close()
    shown = json.loads(run("track", "q1@test", "--all-sites", "--json", "-D", data_dir).stdout)
    assert (shown["message_id"], shown["asked"], shown["pending"]) == (
        "<q1@test>",
        ["SiteB"],
        ["SiteB"],
    )
    text = run("track", "<elsewhere@test>", "--all-sites", "--wait", "5", "-D", data_dir)
    assert text.exit_code == 0, text.output
    assert "no tracking events for <elsewhere@test> here" in text.stdout
    assert "no server runs for this data dir" in text.stdout
    assert "not answered: SiteB" in text.stdout
    queued = [
        e for e in site_a.queue.entries() if e.recipients[0].address.startswith("sitemail-dsa@")
    ]
    assert len(queued) == 2  # one query per ask, to SiteB's directory-service mailbox
    assert run("track", "NOSUCHID", "--all-sites", "-D", data_dir).exit_code == 66
    assert run("track", "<q1@test>", "--wait", "3", "-D", data_dir).exit_code == 64


def test_cli_serve_port_in_use_is_a_clear_error(site_a: AdminService) -> None:
    """A listener that cannot bind stops `serve` with one error line saying what to change."""
    data_dir = site_a.config.data_dir
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = data_dir / "sitemail.toml"
        config.write_text(config.read_text().replace("# port = 25", f"port = {port}"))
        done = serve_until_it_exits(data_dir)
    assert done.returncode == 78, done.stderr
    assert "Traceback" not in done.stderr
    assert f"cannot listen on 127.0.0.1 port {port}" in done.stderr


def test_cli_queue_list_shows_a_deferral_reason_once(site_a: AdminService) -> None:
    """`queue list` prints the enhanced code once, not again from the reply text."""
    from sitemail.queue.records import defer_recipient, load_recipients  # noqa: PLC0415

    queue_id = queue_one(site_a)
    with site_a.store.write() as conn:
        ((rcpt, _),) = load_recipients(conn, queue_id)
        defer_recipient(
            conn, rcpt.id, status="4.3.5", text="451 4.3.5 try later", now=1.0, next_at=2.0
        )
    listed = run("queue", "list", "-D", site_a.config.data_dir).stdout
    assert "(4.3.5 try later)" in listed
