"""A wheel that installs anywhere (issue 25): `python -m build` on a copy of the sources,
installed into a fresh virtualenv outside the repository (pinned by constraints.txt); that
installation alone runs `init`, `serve` on 127.38.0.4, takes a message over SMTP and shows it
over IMAP. One bounded test: a build and an install are the slow part."""

from __future__ import annotations

import imaplib
import os
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from tests.support.processes import free_port, wait_until
from tests.support.serve import smtp_and_imaps_only

HOST = "127.38.0.4"
REPO = Path(__file__).resolve().parents[2]
STEP_TIMEOUT = 600  # seconds for the build, and for the install (a loaded machine)


def run(*command: str | Path, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.timeout(3 * STEP_TIMEOUT)
def test_wheel_installs_and_serves_outside_the_repository(tmp_path: Path) -> None:
    """Built, installed in a new virtualenv, the wheel alone inits, serves, takes mail over
    SMTP and shows it over IMAP (migrations, templates and static files included)."""
    source = tmp_path / "source"  # the build writes egg-info: never in the repository
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run(
        sys.executable,
        "-m",
        "build",
        "--wheel",
        "--outdir",
        tmp_path / "dist",
        source,
        cwd=tmp_path,
        env=env,
    )
    wheel = next((tmp_path / "dist").glob("sitemail-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for folder in ("store/migrations/versions", "web/templates/console", "web/static"):
        inside = {
            p.relative_to(REPO / "src").as_posix()
            for p in (REPO / "src/sitemail" / folder).iterdir()
            if p.is_file() and p.suffix != ".pyc"
        }
        assert inside <= names, inside - names
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=env)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "--quiet"]
    run(*pip, "-c", REPO / "constraints.txt", wheel, cwd=tmp_path, env=env)
    sitemail = venv / "bin" / "sitemail"
    assert run(sitemail, "--version", cwd=tmp_path, env=env).strip() == "sitemail 0.1.0"
    where = run(
        venv / "bin" / "python",
        "-c",
        "import sitemail; print(sitemail.__file__)",
        cwd=tmp_path,
        env=env,
    )
    assert Path(where.strip()).is_relative_to(venv), where

    data_dir = tmp_path / "site"
    run(
        *(sitemail, "init", "-D", data_dir, "--org", "ExchangeORG", "--site", "SiteA"),
        *("--server", "ServerA", "--domain", "sitea.example.com", "--listen", HOST),
        cwd=tmp_path,
        env=env,
    )
    (tmp_path / "password").write_text("wheel-password-1\n")
    run(
        sitemail,
        *("mailbox", "add", "alice", "--name", "Alice", "-D", data_dir),
        *("--password-file", tmp_path / "password"),
        cwd=tmp_path,
        env=env,
    )
    smtp_port, imaps_port = free_port(HOST), free_port(HOST)
    smtp_and_imaps_only(data_dir, smtp_port, imaps_port)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sitemail, "serve", "--allow-root", "-D", data_dir],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: b"ready: " in log.read_bytes() or server.poll() is not None, 120, "ready"
        )
        assert server.poll() is None, log.read_text()
        message = EmailMessage()
        message["From"] = "someone@example.net"
        message["To"] = "alice@sitea.example.com"
        message["Subject"] = "from the wheel"
        message.set_content("installed anywhere\n")
        with smtplib.SMTP(HOST, smtp_port, timeout=30) as smtp:
            smtp.send_message(message)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the self-signed certificate of `init`
        with imaplib.IMAP4_SSL(HOST, imaps_port, ssl_context=context, timeout=30) as imap:
            imap.login("alice", "wheel-password-1")

            def arrived() -> bool:
                imap.select("INBOX")
                return imap.search(None, "ALL")[1][0] != b""

            wait_until(arrived, 60, "the message in alice's INBOX")
            _, data = imap.fetch(b"1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert b"from the wheel" in data[0][1]
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
