"""IMAP and POP3 in supervised workers: a stuck or dead worker is replaced, SMTP never waits.

The hang hook is SIGSTOP on the IMAP worker (its event loop stops mid-flight, exactly as a
busy loop would look from outside: no heartbeat, no answers); the crash is SIGKILL. Meanwhile
mail keeps arriving on the MX port. A real site on 127.26.0.31; `sitemail serve` as a process
for SIGTERM.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clientsite import PASSWORD, ClientSite, client_site, client_tls, free_port
from tests.support.databases import new_database_url
from tests.support.serve import configure, serve_command

from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind

ADDRESS = "127.26.0.31"
SERVE_ADDRESS = "127.26.0.32"
USER = "jsmith@sitea.example.com"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ClientSite]:
    with client_site(tmp_path, ADDRESS) as running:
        running.add_user("jsmith")
        yield running


def worker_pid(site: ClientSite, kind: str) -> int:
    assert site.server is not None
    pid = site.server.workers[kind].pid
    assert pid is not None
    return pid


def wait_for_new_worker(site: ClientSite, kind: str, old: int, bound: float = 60) -> int:
    """The replacement's pid, waiting at most `bound` seconds (a failure past that)."""
    deadline = time.monotonic() + bound
    pause = threading.Event()
    while time.monotonic() < deadline:
        assert site.server is not None
        pid = site.server.workers[kind].pid
        if pid is not None and pid != old:
            return pid
        pause.wait(0.1)
    raise AssertionError(f"the {kind} worker {old} was not replaced within {bound} s")


def smtp_banner_within(site: ClientSite, seconds: float) -> bytes:
    with socket.create_connection((site.address, site.ports["smtp"]), timeout=seconds) as sock:
        sock.settimeout(seconds)
        return sock.recv(512)


def test_workers_stuck_imap_worker_is_replaced_while_smtp_accepts(
    site: ClientSite, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGSTOP the IMAP worker: SMTP answers and accepts mail at once; the worker is
    found stuck, logged with the cause, killed and replaced; IMAP then shows the mail."""
    caplog.set_level(logging.INFO, logger="sitemail.frontends")
    stuck = worker_pid(site, "imap")
    os.kill(stuck, signal.SIGSTOP)
    try:
        assert smtp_banner_within(site, 1.0).startswith(b"220")
        site.deliver(USER, "while imap hangs")
        site.wait_for_inbox("jsmith", 1)
        replacement = wait_for_new_worker(site, "imap", stuck)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stuck, signal.SIGKILL)
    assert replacement != stuck
    causes = [r.getMessage() for r in caplog.records if r.name == "sitemail.frontends"]
    assert any(f"imap worker pid={stuck} is stuck" in c for c in causes), causes
    client = site.imap_tls(USER)
    try:
        assert client.select("INBOX") == ("OK", [b"1"])
    finally:
        client.logout()


def test_workers_crashed_pop3_worker_is_replaced(
    site: ClientSite, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL the POP3 worker: logged as exited (signal 9), replaced, POP3 serves again."""
    caplog.set_level(logging.INFO, logger="sitemail.frontends")
    dead = worker_pid(site, "pop3")
    os.kill(dead, signal.SIGKILL)
    wait_for_new_worker(site, "pop3", dead)
    causes = [r.getMessage() for r in caplog.records if r.name == "sitemail.frontends"]
    assert any(f"pop3 worker pid={dead} exited (signal 9)" in c for c in causes), causes
    client = site.pop3_tls()
    try:
        client.user("jsmith")
        client.pass_(PASSWORD)
        assert client.stat() == (0, 0)
    finally:
        client.quit()


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def test_workers_sigterm_ends_the_server_and_every_worker(tmp_path: Path) -> None:
    """`sitemail serve` with its two workers: SIGTERM ends all three, exit 0, no traceback."""
    service = AdminService.init(
        tmp_path / "SiteA",
        org="ExchangeORG",
        site="SiteA",
        server="ServerA",
        domain="sitea.example.com",
        listen=[SERVE_ADDRESS],
        database_url=new_database_url(),
    )
    service.add_recipient(ObjectKind.MAILBOX, "jsmith", display_name="J", password=PASSWORD)
    service.close()
    data_dir = tmp_path / "SiteA"
    imaps = free_port(SERVE_ADDRESS)
    configure(
        data_dir,
        {
            "smtp": f"port = {free_port(SERVE_ADDRESS)}",
            "imap": f"port = 0\ntls_port = {imaps}",
            "pop3": f"port = 0\ntls_port = {free_port(SERVE_ADDRESS)}",
            "submission": "port = 0\ntls_port = 0",
        },
    )
    process = subprocess.Popen(
        serve_command(data_dir), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = children_of(process.pid)
            time.sleep(0.2)
        assert len(workers) == 2, workers
        client = imaplib.IMAP4_SSL(SERVE_ADDRESS, imaps, ssl_context=client_tls(), timeout=20)
        client.login(USER, PASSWORD)
        client.logout()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    for pid in workers:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )
