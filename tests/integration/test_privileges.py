"""An unprivileged server (issue 25): `sitemail serve` started as root binds ports 25 and 993
on 127.38.0.1, then every process of it (the server and its IMAP worker) runs as [server] user
with no capability left; started as root with no user to switch to, it refuses (exit 67)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.processes import wait_until
from tests.support.serve import serve_command, smtp_and_imaps_only, user_python

HOST, OTHER_HOST = "127.38.0.1", "127.38.0.7"
SETPRIV = shutil.which("setpriv")
EX_CONFIG = 78
SITEMAIL = Path(sys.executable).parent / "sitemail"
EX_NOUSER = 67

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def root_env() -> dict[str, str]:
    """The environment without the suite's SITEMAIL_ALLOW_ROOT: the server must switch."""
    return {k: v for k, v in os.environ.items() if k != "SITEMAIL_ALLOW_ROOT"}


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory the server's user can reach (pytest's own tmp is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="sitemail-priv-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(status(int(entry.name))["PPid"])
            except (OSError, KeyError, ValueError):
                continue
    found, frontier = [pid], [pid]
    while frontier:
        children = [c for c, p in parents.items() if p in frontier]
        found += children
        frontier = children
    return found


def greets(host: str, port: int, *, tls: bool) -> bytes:
    with socket.create_connection((host, port), timeout=10) as raw:
        if not tls:
            return raw.recv(64)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the self-signed certificate of `init`
        with context.wrap_socket(raw) as secure:
            return secure.recv(64)


def init(data_dir: Path, host: str) -> None:
    """`sitemail init` as root: the user `sitemail` exists afterwards, owning `data_dir`."""
    subprocess.run(
        [
            *(str(SITEMAIL), "init", "-D", str(data_dir), "--org", "ExchangeORG"),
            *("--site", "SiteA", "--server", "ServerA", "--domain", "sitea.example.com"),
            *("--listen", host),
        ],
        capture_output=True,
        timeout=60,
        check=True,
        env=root_env(),
    )
    smtp_and_imaps_only(data_dir, 25, 993)


def serve_as_the_user(folder: Path, command: list[str], host: str) -> None:
    """Run `command` (a server); ports 25 and 993 of `host` answer while the server and its
    IMAP worker run as `sitemail` (uid, gid) with no capability left; SIGTERM ends it."""
    user = pwd.getpwnam("sitemail")
    log = folder / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=root_env())
    try:
        wait_until(lambda: b"ready: " in log.read_bytes() or server.poll() is not None, 60, "ready")
        assert server.poll() is None, log.read_text()
        assert greets(host, 25, tls=False).startswith(b"220 ")
        assert greets(host, 993, tls=True).startswith(b"* OK")
        processes = descendants(server.pid)
        assert len(processes) >= 2, "the server and its IMAP worker"
        for pid in processes:
            fields = status(pid)
            assert fields["Uid"].split() == [str(user.pw_uid)] * 4, (pid, fields["Uid"])
            assert fields["Gid"].split() == [str(user.pw_gid)] * 4, (pid, fields["Gid"])
            assert int(fields["CapEff"], 16) == 0, (pid, fields["CapEff"])
            assert int(fields["CapPrm"], 16) == 0, (pid, fields["CapPrm"])
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


def test_serve_as_root_runs_every_process_as_the_service_user(public_dir: Path) -> None:
    """Started as root: ports 25 and 993 answer while the server and its worker run as
    [server] user (uid, gid, no capability), and the data dir is that user's."""
    data_dir = public_dir / "SiteA"
    init(data_dir, HOST)
    python = user_python(public_dir)
    serve = [str(python), "-c", "from sitemail.main import main; main()", "serve"]
    serve_as_the_user(public_dir, [*serve, "-D", str(data_dir)], HOST)
    uid = pwd.getpwnam("sitemail").pw_uid
    for path in [data_dir, *data_dir.rglob("*")]:
        assert path.lstat().st_uid == uid, path


@pytest.mark.skipif(SETPRIV is None, reason="util-linux's setpriv is not installed")
def test_serve_as_the_user_with_the_capability_needs_no_root(public_dir: Path) -> None:
    """Started as `sitemail` with CAP_NET_BIND_SERVICE (as systemd does): it binds 25 and
    993 without root; a file of another user in its data dir stops it at start, exit 78."""
    assert SETPRIV is not None
    data_dir = public_dir / "SiteA"
    init(data_dir, OTHER_HOST)
    python = user_python(public_dir)
    command = [
        *(SETPRIV, "--reuid=sitemail", "--regid=sitemail", "--init-groups"),
        *("--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"),
        *(str(python), "-c", "from sitemail.main import main; main()", "serve"),
        *("-D", str(data_dir)),
    ]
    serve_as_the_user(public_dir, command, OTHER_HOST)
    (data_dir / "stray").write_text("left by root\n")
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=root_env(), check=False
    )
    assert done.returncode == EX_CONFIG, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "stray belongs to root, not to sitemail" in lines[0], lines
    assert f"chown -R sitemail: {data_dir}" in lines[0], lines


def test_serve_as_root_without_a_user_refuses(tmp_path: Path) -> None:
    """Started as root with a [server] user that does not exist: one error line, exit 67."""
    data_dir = tmp_path / "SiteA"
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
    config = data_dir / "sitemail.toml"
    text = config.read_text().replace("[server]\n", '[server]\nuser = "nosuchsitemailuser"\n')
    config.write_text(text)
    done = subprocess.run(
        serve_command(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        env=root_env(),
        check=False,
    )
    assert done.returncode == EX_NOUSER, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        "error: refusing to run as root: [server] user nosuchsitemailuser does not exist"
    ), lines
    assert "--allow-root" in lines[0]
