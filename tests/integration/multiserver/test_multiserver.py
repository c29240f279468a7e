"""A site of two servers on one PostgreSQL database (docs/multiserver.md): ServerA and ServerA2,
each its own `SiteServer` on its own address of 127.35.1.x with every listener, the second
made by `AdminService.join` (`sitemail server add`). Any server takes any user's mail and
client; an idle IMAP client of one sees mail delivered through the other; UIDs stay strictly
increasing whichever server delivers; the site keeps one key."""

from __future__ import annotations

import imaplib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clientsite import ClientSite, client_site, serve_data_dir

from sitemail.admin.service import AdminService
from sitemail.core.errors import ConfigError
from sitemail.directory import ObjectKind

ADDRESS_1, ADDRESS_2 = "127.35.1.1", "127.35.1.2"


@pytest.fixture
def servers(tmp_path: Path, pg_url: str) -> Iterator[tuple[ClientSite, ClientSite]]:
    """ServerA and ServerA2 of SiteA, both running, one database; jsmith has a mailbox."""
    with client_site(tmp_path, ADDRESS_1, database_url=pg_url) as first:
        first.add_user("jsmith")
        joined = first.service.join(tmp_path / "SiteA2", server="ServerA2", listen=[ADDRESS_2])
        second = serve_data_dir(tmp_path / "SiteA2", joined, ADDRESS_2)
        try:
            yield first, second
        finally:
            second.stop()
            joined.close()


def uids(client: imaplib.IMAP4) -> list[int]:
    typ, data = client.uid("SEARCH", "ALL")
    assert typ == "OK"
    return [int(u) for u in (data[0] or b"").split()]  # type: ignore[union-attr]


def test_multiserver_idle_on_one_sees_mail_delivered_through_the_other(
    servers: tuple[ClientSite, ClientSite],
) -> None:
    """An IMAP client idling on ServerA is told EXISTS for mail taken in by ServerA2's SMTP
    and delivered there (the other process's commit, seen through the shared database)."""
    first, second = servers
    client = first.imap_tls("jsmith")
    try:
        assert client.select("INBOX")[0] == "OK"
        tag: bytes = client._new_tag()  # type: ignore[attr-defined]
        client.send(tag + b" IDLE\r\n")
        assert client.readline().startswith(b"+")
        sent = time.monotonic()
        second.deliver("jsmith@sitea.example.com", "through the other server")
        line = client.readline()
        while line.startswith(b"* ") and b"EXISTS" not in line:
            line = client.readline()
        seen = time.monotonic() - sent
        assert line == b"* 1 EXISTS\r\n"
        print(f"IDLE on server 1 saw server 2's delivery {seen * 1000:.0f} ms after the send")
        client.send(b"DONE\r\n")
    finally:
        client.shutdown()


def test_multiserver_uids_increase_whichever_server_delivers(
    servers: tuple[ClientSite, ClientSite],
) -> None:
    """Mail through both servers in turn gets UIDs 1..n, each once, in delivery order; both
    servers' IMAP show the same folder."""
    first, second = servers
    count = 12
    for n in range(count):
        (first if n % 2 else second).deliver("jsmith@sitea.example.com", f"turn {n}")
    first.wait_for_inbox("jsmith", count)
    views = []
    for site in (first, second):
        client = site.imap_tls("jsmith")
        try:
            client.select("INBOX")
            views.append(uids(client))
        finally:
            client.logout()
    assert views[0] == views[1] == list(range(1, count + 1))


def test_multiserver_servers_share_the_site_and_its_key(
    servers: tuple[ClientSite, ClientSite],
) -> None:
    """Both servers are Server objects of SiteA, sign with the one site key, and greet with
    their own names."""
    first, second = servers
    assert first.service.site_key() == second.service.site_key()
    names = {s.alias for s in first.service.directory.list_objects(ObjectKind.SERVER)}
    assert names == {"ServerA", "ServerA2"}
    with second.smtp() as client:
        banner = client.ehlo()[1].decode()
    assert re.match(r"servera2\.sitea\.example\.com", banner)


@pytest.mark.sqlite_only
def test_multiserver_join_refuses_a_site_on_sqlite(site_a: AdminService, tmp_path: Path) -> None:
    """Servers share a site through PostgreSQL only: joining a SQLite site says how to move."""
    with pytest.raises(ConfigError, match="store migrate"):
        site_a.join(tmp_path / "Two", server="ServerA2", listen=["127.35.1.3"])
