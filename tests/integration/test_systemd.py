"""The systemd service (issue 25): `sitemail service install` writes a unit that
`systemd-analyze verify` accepts, and `serve` tells a real $NOTIFY_SOCKET READY=1 once it
serves, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.processes import SMTP_ONLY, free_port
from tests.support.serve import configure, serve_command

HOST = "127.38.0.3"
SITEMAIL = Path(sys.executable).parent / "sitemail"
ANALYZE = shutil.which("systemd-analyze")


def init(data_dir: Path) -> None:
    subprocess.run(
        [
            *(str(SITEMAIL), "init", "-D", str(data_dir), "--org", "ExchangeORG"),
            *("--site", "SiteA", "--server", "ServerA", "--domain", "sitea.example.com"),
            *("--listen", HOST),
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )


def install(data_dir: Path, unit_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SITEMAIL), "service", "install", "-D", str(data_dir), "--unit-dir", str(unit_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(ANALYZE is None, reason="Debian's systemd package is not installed")
def test_service_install_writes_a_unit_systemd_accepts(tmp_path: Path) -> None:
    """The unit written by `service install` passes `systemd-analyze verify`, sandboxed."""
    assert ANALYZE is not None
    init(tmp_path / "site")
    units = tmp_path / "units"
    done = install(tmp_path / "site", units)
    assert done.returncode == 0, done.stderr
    unit = units / "sitemail.service"
    text = unit.read_text()
    for line in (
        "Type=notify",
        "User=sitemail",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={(tmp_path / 'site').resolve()}",
        "SystemCallFilter=@system-service",
    ):
        assert line in text.splitlines(), line
    verify = subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == "", verify.stderr


def test_service_install_refuses_a_data_dir_under_home(tmp_path: Path) -> None:
    """A data dir the sandbox would hide (ProtectHome) is refused with its reason."""
    home = Path("/home") / f"sitemail-test-{os.getpid()}"
    try:
        init(home / "site")
        done = install(home / "site", tmp_path)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert done.returncode == 64, done
    assert "ProtectHome" in done.stderr
    assert not (tmp_path / "sitemail.service").exists()


def states(sock: socket.socket, until: bytes) -> list[bytes]:
    """Datagrams received on the notify socket up to the one holding `until`."""
    seen: list[bytes] = []
    while not seen or until not in seen[-1]:
        seen.append(sock.recv(4096))
    return seen


def test_serve_notifies_ready_reloading_and_stopping(tmp_path: Path) -> None:
    """READY=1 once serving, RELOADING=1 then READY=1 on SIGHUP ([queue] applied, a
    [limits] change left for a restart), STOPPING=1 on SIGTERM."""
    data_dir = tmp_path / "site"
    init(data_dir)
    configure(data_dir, {**SMTP_ONLY, "smtp": f"port = {free_port(HOST)}"})
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(60)
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                serve_command(data_dir), stdout=out, stderr=subprocess.STDOUT, env=env
            )
        try:
            ready = states(sock, b"READY=1")
            assert b"ready: " in log.read_bytes()  # sent once it serves, not before
            assert f"MAINPID={server.pid}".encode() in ready[-1]
            configure(data_dir, {"queue": "retry_initial = 60", "limits": "recipients = 50"})
            server.send_signal(signal.SIGHUP)
            assert states(sock, b"READY=1")[0] == b"RELOADING=1"
            server.send_signal(signal.SIGTERM)
            assert states(sock, b"STOPPING=1")[-1] == b"STOPPING=1"
            assert server.wait(timeout=30) == 0, log.read_text()
            text = log.read_text()
            assert "reload: [queue] applied" in text
            assert "reload: sitemail.toml changed (limits): read at start only" in text
            assert "reloaded: TLS certificate checked" in text
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(timeout=10)
