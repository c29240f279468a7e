"""Real mail clients from Debian's packages read mail the site received by SMTP.

mbsync (isync) pulls INBOX over IMAP into a Maildir, once over implicit TLS (993) and once over
STARTTLS (143), verifying the site's certificate; fetchmail downloads over POP3 with STLS and
hands each message to a command; neomutt, its keys pushed from the command line, reads and
moves a message over IMAPS. scripts/test-deps.sh installs the three (CI runs it); elsewhere the
tests are skipped when the programs are missing.
"""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import struct
import subprocess
import termios
import time
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


# -- neomutt ---------------------------------------------------------------------------------

MUTT_ADDRESS = "127.32.0.10"


def muttrc(site: ClientSite, home: Path) -> Path:
    """A muttrc that never asks: every question a default answer, every pause zero."""
    url = f"imaps://{site.address}:{site.ports['imaps']}/"
    rc = home / "muttrc"
    rc.write_text(
        f'set imap_user = "jsmith@sitea.example.com"\n'
        f'set imap_pass = "{PASSWORD}"\n'
        f'set folder = "{url}"\n'
        'set spoolfile = "+INBOX"\n'
        # the site's own self-signed certificate is the one trusted; it names the server,
        # not the loopback address the test dials
        f'set certificate_file = "{certificate(site)}"\n'
        "set ssl_verify_host = no\n"
        "set ssl_force_tls = yes\n"
        "set ssl_starttls = no\n"
        'set record = ""\n'
        'set header_cache = ""\n'
        'set message_cachedir = ""\n'
        "set confirmcreate = no\n"
        "set confirmappend = no\n"
        "set delete = yes\n"
        "set quit = yes\n"
        "set move = no\n"
        "set mark_old = no\n"
        "set wait_key = no\n"
        "set sleep_time = 0\n"
        "set imap_idle = no\n"
        "set mail_check_stats = no\n"
        "set pager_stop = yes\n"
        'set pager = "builtin"\n'
        "set sort = date-sent\n"
    )
    return rc


def run_on_terminal(command: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run a full-screen program on a pseudo-terminal of its own (curses needs one; no human
    and no expect-like script is involved: the program's keys come from its own `push`).
    Returns its exit status and what it drew, for the failure message."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        command, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    drawn = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the program closed the terminal
                    break
                if not chunk:
                    break
                drawn += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), drawn.decode(
            errors="replace"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)


def test_neomutt_reads_and_moves_a_message(tmp_path: Path) -> None:
    """neomutt lists INBOX over IMAPS, displays a message and saves (moves) it to a folder."""
    neomutt = program("neomutt")
    with client_site(tmp_path, MUTT_ADDRESS) as site:
        site.add_user("jsmith")
        neomutt_session(neomutt, site, tmp_path)


def neomutt_session(neomutt: str, site: ClientSite, tmp_path: Path) -> None:
    """Two messages in INBOX; neomutt moves the newest to Archive; the server shows it did."""
    site.deliver("jsmith@sitea.example.com", "keep in inbox", body="stays where it is")
    site.wait_for_inbox("jsmith", 1)
    site.deliver("jsmith@sitea.example.com", "file me away", body="moved by neomutt")
    site.wait_for_inbox("jsmith", 2)
    with site.imap_tls("jsmith@sitea.example.com") as client:
        assert client.create("Archive")[0] == "OK"
    # sorted by date sent, the newest last: <last-entry> is "file me away"
    keys = "<last-entry><display-message><exit><save-message>=Archive<enter><sync-mailbox><quit>"
    env = {
        "HOME": str(tmp_path),
        "TERM": "xterm",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
    }
    status, drawn = run_on_terminal(
        [neomutt, "-n", "-F", str(muttrc(site, tmp_path)), "-e", f"push '{keys}'"],
        env,
        timeout=60,
    )
    assert status == 0, drawn[-2000:]
    archived = site.inbox("jsmith", "Archive")
    assert len(archived) == 1, drawn[-2000:]
    assert b"moved by neomutt" in archived[0]
    remaining = site.inbox("jsmith")
    assert len(remaining) == 1
    assert b"stays where it is" in remaining[0]
    # the message neomutt displayed was marked read on the server before the move
    with site.imap_tls("jsmith@sitea.example.com") as client:
        client.select("Archive", readonly=True)
        typ, data = client.fetch("1", "(FLAGS)")
        assert typ == "OK"
        assert b"\\Seen" in data[0]
