"""Backup and restore while the server serves (issue 25): mail flows into a site on
127.38.0.5 while `sitemail backup` runs; the copy, restored into another data dir and served
on 127.38.0.6, holds every message acknowledged before the backup started, its mailbox opens
over IMAP, and the original keeps serving. `restore` refuses a running site, a non-empty
directory and a damaged backup."""

from __future__ import annotations

import imaplib
import re
import shutil
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clientsite import client_tls, free_ports
from tests.support.processes import ServeProcess, wait_until
from tests.support.serve import smtp_and_imaps_only

ORIGINAL, RESTORED = "127.38.0.5", "127.38.0.6"
SITEMAIL = Path(sys.executable).parent / "sitemail"
PASSWORD = "backup-password-1"
MAX_MESSAGES = 3000  # the sender stops by itself
EX_CANTCREAT, EX_DATAERR = 73, 65


def sitemail(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SITEMAIL), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def make_site(data_dir: Path, password_file: Path) -> dict[str, int]:
    """SiteA on ORIGINAL with mailbox alice; its SMTP and IMAPS ports."""
    done = sitemail(
        *("init", "-D", data_dir, "--org", "ExchangeORG", "--site", "SiteA"),
        *("--server", "ServerA", "--domain", "sitea.example.com", "--listen", ORIGINAL),
    )
    assert done.returncode == 0, done.stderr
    done = sitemail(
        *("mailbox", "add", "alice", "--name", "Alice", "-D", data_dir),
        *("--password-file", password_file),
    )
    assert done.returncode == 0, done.stderr
    smtp, imaps = free_ports(ORIGINAL, 2)
    smtp_and_imaps_only(data_dir, smtp, imaps)
    return {"smtp": smtp, "imaps": imaps}


class Sender:
    """One SMTP client sending "load <n>" to alice until stopped; when each 250 came."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.acked: list[tuple[int, float]] = []
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        try:
            with smtplib.SMTP(ORIGINAL, self.port, timeout=30) as smtp:
                for n in range(MAX_MESSAGES):
                    if self._stop.is_set():
                        return
                    body = f"Subject: load {n}\r\nFrom: a@example.net\r\n\r\nmessage {n}\r\n"
                    smtp.sendmail("a@example.net", ["alice@sitea.example.com"], body)
                    self.acked.append((n, time.monotonic()))  # the 250 came before this
        except (OSError, smtplib.SMTPException) as exc:
            self.failure = exc


def inbox(host: str, port: int) -> set[int]:
    """The numbers of the "load <n>" messages in alice's INBOX, over IMAP."""
    with imaplib.IMAP4_SSL(host, port, ssl_context=client_tls(), timeout=30) as imap:
        imap.login("alice", PASSWORD)
        _, (count,) = imap.select("INBOX")
        if count == b"0":
            return set()
        _, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        found = set()
        for item in data:
            if isinstance(item, tuple):
                match = re.search(rb"load (\d+)", item[1])
                if match:
                    found.add(int(match.group(1)))
        return found


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for server in started:
        server.cleanup()


@pytest.mark.timeout(600)
def test_backup_under_load_restores_every_acknowledged_message(
    tmp_path: Path, servers: list[ServeProcess]
) -> None:
    """Messages flow while `backup` runs; the restored copy on another address holds every
    message acknowledged before it started and serves it over IMAP; the original goes on."""
    (tmp_path / "password").write_text(PASSWORD + "\n")
    original_dir, restored_dir, copy = (
        tmp_path / "original",
        tmp_path / "restored",
        tmp_path / "backup",
    )
    ports = make_site(original_dir, tmp_path / "password")
    original = ServeProcess(original_dir, tmp_path)
    servers.append(original)
    original.start()
    with Sender(ports["smtp"]) as sender:
        wait_until(
            lambda: len(sender.acked) >= 50 or sender.failure is not None, 120, "50 messages"
        )
        started = time.monotonic()
        before = {n for n, at in sender.acked if at < started}
        done = sitemail("backup", copy, "-D", original_dir)
        assert done.returncode == 0, done.stderr
        during = len(sender.acked)
        wait_until(
            lambda: len(sender.acked) >= during + 20 or sender.failure is not None,
            120,
            "mail after the backup",
        )
    assert sender.failure is None, sender.failure
    assert original.process is not None
    assert original.process.poll() is None
    assert (copy / "manifest.json").is_file()
    assert (copy / "sitemail.db").is_file()

    refused = sitemail("restore", copy, "-D", original_dir)
    assert refused.returncode == EX_CANTCREAT, refused
    assert "running" in refused.stderr, refused
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    refused = sitemail("restore", copy, "-D", tmp_path / "full")
    assert refused.returncode == EX_CANTCREAT, refused
    assert "not empty" in refused.stderr, refused
    damaged = tmp_path / "damaged"
    shutil.copytree(copy, damaged)
    (damaged / "sitemail.toml").write_text((damaged / "sitemail.toml").read_text() + "\n# x\n")
    refused = sitemail("restore", damaged, "-D", tmp_path / "from-damaged")
    assert refused.returncode == EX_DATAERR, refused
    assert "checksum" in refused.stderr, refused

    done = sitemail("restore", copy, "-D", restored_dir)
    assert done.returncode == 0, done.stderr
    smtp, imaps = free_ports(RESTORED, 2)
    config = restored_dir / "sitemail.toml"
    text = config.read_text().replace(f'"{ORIGINAL}"', f'"{RESTORED}"')
    text = text.replace(f"port = {ports['smtp']}\n", f"port = {smtp}\n")
    config.write_text(text.replace(f"tls_port = {ports['imaps']}\n", f"tls_port = {imaps}\n"))
    restored = ServeProcess(restored_dir, tmp_path)
    servers.append(restored)
    restored.start()
    wait_until(lambda: before <= inbox(RESTORED, imaps), 180, "every acknowledged message restored")
    everything = {n for n, _ in sender.acked}
    wait_until(lambda: everything <= inbox(ORIGINAL, ports["imaps"]), 180, "the original's mail")
    assert original.stop() == 0
    assert restored.stop() == 0
    assert original.problems() == []
    assert restored.problems() == []
