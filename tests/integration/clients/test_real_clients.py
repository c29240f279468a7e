"""Real mail clients from Debian's packages read mail the site received by SMTP.

mbsync (isync) pulls INBOX over IMAP into a Maildir, once over implicit TLS (993) and once over
STARTTLS (143), verifying the site's certificate; fetchmail downloads over POP3 with STLS and
hands each message to a command. scripts/test-deps.sh installs both (CI runs it); elsewhere the
tests are skipped when the programs are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clientsite import PASSWORD, ClientSite, client_site

ADDRESS = "127.10.70.51"


def program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: scripts/test-deps.sh should have installed it")
        pytest.skip(f"{name} is not installed (scripts/test-deps.sh installs it)")
    return path


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ClientSite]:
    with client_site(tmp_path, ADDRESS) as running:
        running.add_user("jsmith")
        yield running


def certificate(site: ClientSite) -> Path:
    return site.config.path(site.config.tls.cert_file)


def maildir_messages(folder: Path) -> list[bytes]:
    return [p.read_bytes() for sub in ("new", "cur") for p in sorted((folder / sub).glob("*"))]


@pytest.mark.parametrize(("ssl_type", "port_name"), [("IMAPS", "imaps"), ("STARTTLS", "imap")])
def test_mbsync_pulls_mail_delivered_by_smtp(
    site: ClientSite, tmp_path: Path, ssl_type: str, port_name: str
) -> None:
    """isync's mbsync logs in, lists, and copies the INBOX into a Maildir, intact."""
    mbsync = program("mbsync")
    site.deliver("jsmith@sitea.example.com", "for mbsync", body="read me with isync")
    site.wait_for_inbox("jsmith", 1)
    mail = tmp_path / "mail"
    mail.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(
        f"""IMAPAccount sitemail
Host {site.address}
Port {site.ports[port_name]}
User jsmith@sitea.example.com
Pass "{PASSWORD}"
SSLType {ssl_type}
CertificateFile {certificate(site)}

IMAPStore remote
Account sitemail

MaildirStore local
Path {mail}/
Inbox {mail}/INBOX

Channel inbox
Far :remote:
Near :local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
"""
    )
    done = subprocess.run(
        [mbsync, "-c", str(config), "inbox"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr + done.stdout
    pulled = maildir_messages(mail / "INBOX")
    assert len(pulled) == 1
    # Maildir keeps local line ends (mbsync turns CRLF into LF) and mbsync adds its X-TUID
    # header while it copies; nothing else changes
    local = b"".join(
        line for line in pulled[0].splitlines(keepends=True) if not line.startswith(b"X-TUID:")
    )
    assert local == site.inbox("jsmith")[0].replace(b"\r\n", b"\n")
    assert b"read me with isync" in pulled[0]


def test_fetchmail_downloads_over_pop3_with_stls(site: ClientSite, tmp_path: Path) -> None:
    """fetchmail negotiates STLS, checks the certificate, logs in, retrieves and deletes."""
    fetchmail = program("fetchmail")
    for n in range(2):
        site.deliver("jsmith@sitea.example.com", f"for fetchmail {n}", body=f"pop body {n}")
    site.wait_for_inbox("jsmith", 2)
    out = tmp_path / "fetched"
    out.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll {site.address} protocol POP3 port {site.ports['pop3']}\n"
        f'  user "jsmith" password "{PASSWORD}"\n'
        f"  sslproto tls1.2+ sslcertck sslcertfile {certificate(site)}\n"
        # fetchmail matches the certificate's names only, not its IP addresses
        f"  sslcommonname servera.sitea.example.com\n"
        f"  mda \"/bin/sh -c 'cat > {out}/msg.$$'\"\n"
    )
    rc.chmod(0o600)
    done = subprocess.run(
        [fetchmail, "-f", str(rc), "--nosyslog", "--norewrite", "-v"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "STLS" in done.stdout + done.stderr
    fetched = sorted(p.read_bytes() for p in out.iterdir())
    assert len(fetched) == 2
    assert any(b"pop body 0" in m for m in fetched)
    assert any(b"pop body 1" in m for m in fetched)
    assert site.inbox("jsmith") == []  # fetchmail deletes after download, at QUIT
