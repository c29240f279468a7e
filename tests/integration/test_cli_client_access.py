"""`sitemail serve` as a process: client-access ports from sitemail.toml, clear start-up errors."""

from __future__ import annotations

import imaplib
import poplib
import signal
import socket
import subprocess
import threading
from pathlib import Path

from tests.support.clientsite import client_tls, free_port
from tests.support.serve import configure, serve_command, serve_until_it_exits

from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind

ADDRESS = "127.10.70.71"
PASSWORD = "serve test password"


def serve(data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        serve_command(data_dir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def answers(port: int) -> bool:
    try:
        with socket.create_connection((ADDRESS, port), timeout=1):
            return True
    except OSError:
        return False


def init(tmp_path: Path) -> Path:
    service = AdminService.init(
        tmp_path / "SiteA",
        org="ExchangeORG",
        site="SiteA",
        server="ServerA",
        domain="sitea.example.com",
        listen=[ADDRESS],
    )
    try:
        service.add_recipient(
            ObjectKind.MAILBOX, "jsmith", display_name="John Smith", password=PASSWORD
        )
    finally:
        service.close()
    return tmp_path / "SiteA"


def test_serve_opens_the_client_access_ports_from_its_config(tmp_path: Path) -> None:
    """IMAPS and POP3S on the configured ports, the STARTTLS ports switched off with 0."""
    data_dir = init(tmp_path)
    smtp, imaps, pop3s = (free_port(ADDRESS) for _ in range(3))
    configure(
        data_dir,
        {
            "smtp": f"port = {smtp}",
            "imap": f"port = 0\ntls_port = {imaps}",
            "pop3": f"port = 0\ntls_port = {pop3s}",
            "submission": "port = 0\ntls_port = 0",
        },
    )
    process = serve(data_dir)
    try:
        pause = threading.Event()
        for _ in range(300):
            if answers(imaps) and answers(pop3s):
                break
            assert process.poll() is None, process.communicate()
            pause.wait(0.1)
        client = imaplib.IMAP4_SSL(ADDRESS, imaps, ssl_context=client_tls(), timeout=20)
        client.login("jsmith@sitea.example.com", PASSWORD)
        assert client.select("INBOX") == ("OK", [b"0"])
        client.logout()
        pop = poplib.POP3_SSL(ADDRESS, pop3s, context=client_tls(), timeout=20)
        pop.user("jsmith")
        pop.pass_(PASSWORD)
        assert pop.stat() == (0, 0)
        pop.quit()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert f"imaps listening on {ADDRESS}:{imaps}" in stderr


def test_serve_names_the_setting_of_a_port_it_cannot_use(tmp_path: Path) -> None:
    """An IMAP port in use and an out-of-range POP3 port each stop serve with one clear line."""
    data_dir = init(tmp_path)
    with socket.socket() as taken:
        taken.bind((ADDRESS, 0))
        taken.listen()
        busy = taken.getsockname()[1]
        configure(
            data_dir,
            {
                "smtp": f"port = {free_port(ADDRESS)}",
                "submission": "port = 0\ntls_port = 0",
                "imap": f"port = {busy}\ntls_port = 0",
            },
        )
        done = serve_until_it_exits(data_dir)
    assert done.returncode == 78, done.stderr
    assert "Traceback" not in done.stderr
    assert f"cannot listen on {ADDRESS} port {busy}" in done.stderr
    assert "[imap] port" in done.stderr
    configure(data_dir, {"pop3": "tls_port = 70000"})
    done = serve_until_it_exits(data_dir)
    assert done.returncode == 78, done.stderr
    assert "[pop3] tls_port: port must be 1-65535, got 70000" in done.stderr
