"""`kill -9` of a real `sitemail serve` in the middle of a big message's DATA.

The message is being spooled (megabytes written, the end not sent yet) when the server dies.
After a restart: no trace of it in the queue or a mailbox, no spool file left in the data
dir's incoming/ (a stray file put there, as a system without O_TMPFILE would leave one, is
removed at start), and a big message sent then is accepted and delivered whole.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.support.org import free_port

from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind
from sitemail.site import SPOOL_DIR

SITEMAIL = Path(sys.executable).with_name("sitemail")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SITEMAIL.exists(), reason="console script not installed"),
]

HOST = "127.23.0.20"
DOMAIN = "sitea.example.com"
LINE = b"0123456789" * 7 + b"abcdef\r\n"
MESSAGE = b"Subject: big\r\nMessage-ID: <big@outside.test>\r\n\r\n" + LINE * 100_000  # 7.8 MB
START_TIMEOUT = 20.0


def make_site(data_dir: Path, port: int) -> None:
    service = AdminService.init(
        data_dir, org="ExchangeORG", site="SiteA", server="ServerA", domain=DOMAIN, listen=[HOST]
    )
    try:
        service.add_recipient(ObjectKind.MAILBOX, "alice", display_name="Alice")
    finally:
        service.close()
    config = data_dir / "sitemail.toml"
    text = config.read_text(encoding="utf-8")
    text = text.replace("[smtp]\n", f"[smtp]\nport = {port}\n", 1)
    text = text.replace("[limits]\n", "[limits]\nmessage_size = 20000000\n", 1)
    for section in ("imap", "pop3", "submission"):
        text = text.replace(f"[{section}]\n", f"[{section}]\nport = 0\ntls_port = 0\n", 1)
    text = text.replace("[admin]\n", "[admin]\nport = 0\n", 1)
    config.write_text(text, encoding="utf-8")


def start(data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "SITEMAIL_DATA_DIR"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(SITEMAIL), "serve", "--data-dir", str(data_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while b"ready: " not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"server not ready:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return process


def rows(data_dir: Path, table: str) -> int:
    with sqlite3.connect(data_dir / "sitemail.db", timeout=10) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_crash_kill_9_mid_data_leaves_no_partial_message_and_no_spool_file(
    tmp_path: Path,
) -> None:
    """Killed while 6 MB of a message are spooled: nothing of it remains after a restart,
    the spool directory is emptied, and the next big message is accepted and delivered."""
    data_dir = tmp_path / "data"
    port = free_port(HOST)
    make_site(data_dir, port)
    process = start(data_dir, tmp_path / "serve-1.log")
    try:
        with socket.create_connection((HOST, port), timeout=10) as sock:
            replies = sock.makefile("rb")
            sock.sendall(b"EHLO client.test\r\nMAIL FROM:<a@outside.test>\r\n")
            sock.sendall(f"RCPT TO:<alice@{DOMAIN}>\r\nDATA\r\n".encode())
            codes: list[bytes] = []
            while len(codes) < 5:  # greeting, EHLO, MAIL, RCPT, DATA (last lines only)
                line = replies.readline()
                if line[3:4] != b"-":
                    codes.append(line[:3])
            assert codes == [b"220", b"250", b"250", b"250", b"354"]
            sock.sendall(MESSAGE[: 6 * 1024 * 1024])  # no end: the message is in mid-flight
            time.sleep(1.0)  # the server reads and spools what was sent
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    spool = data_dir / SPOOL_DIR
    (spool / "data-stray").write_bytes(b"a partial message")
    process = start(data_dir, tmp_path / "serve-2.log")
    try:
        assert list(spool.iterdir()) == []
        assert rows(data_dir, "queue_message") == 0
        assert rows(data_dir, "mail_message") == 0
        with smtplib.SMTP(HOST, port, local_hostname="client.test", timeout=60) as client:
            assert client.sendmail("a@outside.test", [f"alice@{DOMAIN}"], MESSAGE) == {}
        deadline = time.monotonic() + 30
        while rows(data_dir, "mail_message") != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        with sqlite3.connect(data_dir / "sitemail.db") as db:
            (content,) = db.execute("SELECT content FROM mail_message").fetchone()
        assert content.endswith(MESSAGE)
        assert rows(data_dir, "queue_message") == 0
        assert list(spool.iterdir()) == []
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
