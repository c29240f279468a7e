"""Secrets on disk (issue 19): `sitemail init` and `sitemail serve`, run with umask 000 as real
processes on 127.27.0.20, leave the data dir 0700 and every secret file 0600, SQLite's -wal
and -shm included; a database left 0644 by an older version is named with its fix."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tests.support.org import free_port
from tests.support.serve import serve_command

HOST = "127.27.0.20"
SITEMAIL = Path(sys.executable).parent / "sitemail"
SECRETS = (
    "sitemail.toml",
    "sitemail.db",
    "sitemail.db-wal",
    "sitemail.db-shm",
    "admin-token",
    "keys/site-ed25519.pem",
    "tls/key.pem",
)


def no_umask() -> None:
    os.umask(0)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def init(data_dir: Path) -> None:
    subprocess.run(
        [
            *(str(SITEMAIL), "init", "-D", str(data_dir), "--org", "ExchangeORG"),
            *("--site", "SiteA", "--server", "ServerA", "--domain", "sitea.example.com"),
            *("--listen", HOST),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        preexec_fn=no_umask,
    )
    config = data_dir / "sitemail.toml"
    text = config.read_text().replace("[smtp]\n", f"[smtp]\nport = {free_port(HOST)}\n", 1)
    for section in ("imap", "pop3", "submission"):
        text = text.replace(f"[{section}]\n", f"[{section}]\nport = 0\ntls_port = 0\n", 1)
    config.write_text(text.replace("[admin]\n", f"[admin]\nport = {free_port(HOST)}\n", 1))


def serve(data_dir: Path) -> str:
    """Run `sitemail serve` (umask 000) until its admin API answers, add a mailbox through
    it (so the database is written), stop it; its stderr."""
    url = subprocess.run(
        [str(SITEMAIL), "admin", "url", "--api", "-D", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    token = (data_dir / "admin-token").read_text().strip()
    process = subprocess.Popen(
        serve_command(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=no_umask,  # noqa: PLW1509
    )
    try:
        for _ in range(300):
            assert process.poll() is None, process.communicate()[1]
            try:
                answer = httpx.post(
                    f"{url}recipients",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"kind": "mailbox", "alias": "jsmith", "display_name": "J"},
                    timeout=5,
                )
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            assert answer.status_code == 201, answer.text
            assert (data_dir / "sitemail.db-wal").exists()
            break
        else:
            raise AssertionError("the server never answered")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    return stderr


def test_file_modes_secrets_are_private_after_init_and_serve(tmp_path: Path) -> None:
    """With umask 000: after init the data dir is 0700 and each secret 0600; after serve (which
    writes the database: -wal and -shm appear) too, and serve warns about nothing."""
    data_dir = tmp_path / "SiteA"
    init(data_dir)
    assert mode(data_dir) == 0o700
    for name in ("sitemail.toml", "sitemail.db", "admin-token", "keys/site-ed25519.pem"):
        assert mode(data_dir / name) == 0o600, name
    assert mode(data_dir / "keys") == 0o700
    assert mode(data_dir / "tls") == 0o700
    stderr = serve(data_dir)
    for name in SECRETS:
        if (data_dir / name).exists():
            assert mode(data_dir / name) == 0o600, name
    assert mode(data_dir) == 0o700
    assert "chmod" not in stderr


def test_file_modes_serve_and_doctor_name_a_readable_database(tmp_path: Path) -> None:
    """A data dir left 0755 with its database 0644 (as older versions made it): serve starts
    and warns with the chmod that fixes it; doctor says the same."""
    data_dir = tmp_path / "SiteA"
    init(data_dir)
    data_dir.chmod(0o755)
    (data_dir / "sitemail.db").chmod(0o644)
    stderr = serve(data_dir)
    assert f"fix: chmod 600 {data_dir / 'sitemail.db'}" in stderr
    assert f"fix: chmod 700 {data_dir}" in stderr
    doctor = subprocess.run(
        [str(SITEMAIL), "doctor", "--json", "--timeout", "1", "-D", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    fixes = [f["fix"] for f in json.loads(doctor.stdout) if f["check"] == "files"]
    assert f"chmod 600 {data_dir / 'sitemail.db'}" in fixes
    assert f"chmod 700 {data_dir}" in fixes
