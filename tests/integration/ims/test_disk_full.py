"""A relaying site whose disk fills: no resend storm, 452 at MAIL, everything delivered after.

The real thing, as the issue's harness found it: `sitemail serve` in its own process, its
data dir on a small tmpfs mounted by the test (CI runs as root), relaying by a domain route to
Postfix's smtp-sink, which answers DATA only after a few seconds (`-w`) and dumps every message
it takes. The test sends until MAIL is refused for want of space above `[queue] min_free`, then
fills the file system to the last byte while the next hop still holds messages: their 250s
arrive when the server cannot record them. Then it frees the space. Every acknowledged
message must reach the sink exactly once, the server must stay up and log the failure once
a minute, not once per message (the run that found it: 30 messages became 18,997 copies).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.org import free_port
from tests.support.serve import relaying_site, serve_command

HOST = "127.22.0.1"  # the relaying site
SINK_HOST = "127.22.0.2"  # the next hop
MB = 1024 * 1024
TMPFS = 40 * MB
RESERVE = 6 * MB  # [queue] min_free
HEADROOM = 3 * MB  # free space above the reserve when the test starts sending
BODY = (b"x" * 76 + b"\r\n") * 1300  # about 100 KB a message
SMTP_SINK = shutil.which("smtp-sink") or (
    "/usr/sbin/smtp-sink" if os.access("/usr/sbin/smtp-sink", os.X_OK) else None
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)"),
    pytest.mark.skipif(SMTP_SINK is None, reason="Postfix's smtp-sink is not installed"),
]


def _until(check: object, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s: {what}")
        time.sleep(0.1)


def _listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


@contextlib.contextmanager
def _tmpfs(path: Path) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def _sink(folder: Path) -> Iterator[tuple[int, Path]]:
    """smtp-sink answering DATA after 3 s, dumping every transaction to one file."""
    assert SMTP_SINK is not None
    port = free_port(SINK_HOST)
    dump = folder / "sink.dump"
    command = [SMTP_SINK, "-u", "root", "-w", "3", "-D", str(dump), f"{SINK_HOST}:{port}", "64"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _until(lambda: _listening(SINK_HOST, port), "smtp-sink listening", 10)
        yield port, dump
    finally:
        process.terminate()
        process.wait(timeout=10)


def _configure(data_dir: Path, port: int, sink_port: int) -> None:
    relaying_site(data_dir, HOST, "sink.test", f"{SINK_HOST}:{sink_port}")
    toml = data_dir / "sitemail.toml"
    text = toml.read_text()
    for table, line in (
        ("smtp", f"port = {port}"),
        ("queue", f"min_free = {RESERVE}"),
        ("imap", "port = 0\ntls_port = 0"),
        ("pop3", "port = 0\ntls_port = 0"),
        ("submission", "port = 0\ntls_port = 0"),
        ("admin", "port = 0"),
    ):
        text = text.replace(f"[{table}]\n", f"[{table}]\n{line}\n", 1)
    toml.write_text(text)


@contextlib.contextmanager
def _serving(data_dir: Path, log: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(serve_command(data_dir), stdout=out, stderr=subprocess.STDOUT)
    try:
        _until(lambda: _listening(HOST, port), "sitemail serve listening", 30)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _free(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _fill(path: Path, leave: int) -> None:
    """Write `path` so the file system keeps only `leave` bytes free (0: to the last byte)."""
    chunk = b"\0" * (256 * 1024)
    with path.open("wb") as out:
        while _free(path.parent) > leave:
            want = min(len(chunk), _free(path.parent) - leave)
            try:
                out.write(chunk[: max(want, 4096)])
                out.flush()
            except OSError:  # ENOSPC: full
                break


def _send(port: int, number: int) -> int:
    """One message; the reply code to MAIL (250 and the rest of the transaction, or 452)."""
    message_id = f"<df{number}@client.test>"
    content = f"Message-ID: {message_id}\r\nSubject: {number}\r\n\r\n".encode() + BODY
    with smtplib.SMTP(HOST, port, local_hostname="client.test", timeout=30) as client:
        client.ehlo()
        code, text = client.mail("alice@client.test", [f"SIZE={len(content)}"])
        if code != 250:
            assert (code, text[:5]) == (452, b"4.3.1"), (code, text)
            return code
        assert client.rcpt("bob@sink.test")[0] == 250
        assert client.data(content)[0] == 250
        return 250


def _received(dump: Path) -> Counter[str]:
    text = dump.read_text(errors="replace") if dump.exists() else ""
    return Counter(re.findall(r"Message-ID: <df(\d+)@client\.test>", text))


def _queued(data_dir: Path) -> int:
    listed = subprocess.run(
        [*serve_command(data_dir)[:3], "queue", "list", "--json", "-D", str(data_dir)],
        capture_output=True,
        check=True,
    )
    return len(json.loads(listed.stdout))


def test_disk_full_while_relaying_sends_each_message_once(tmp_path: Path) -> None:
    """Sent until MAIL says 452 4.3.1, the disk filled to the last byte while the next hop
    held messages: each acknowledged one reaches it exactly once, before and after the space
    is freed, and the server stays up with a handful of log lines."""
    port = free_port(HOST)
    log = tmp_path / "serve.log"
    with _tmpfs(tmp_path / "disk") as disk, _sink(tmp_path) as (sink_port, dump):
        data_dir = disk / "SiteA"
        _configure(data_dir, port, sink_port)
        with _serving(data_dir, log, port) as server:
            _fill(disk / "filler", RESERVE + HEADROOM)
            acknowledged: list[str] = []
            refused_at = None
            for number in range(200):  # about 30 fit above the reserve
                if _send(port, number) == 452:
                    refused_at = number
                    break
                acknowledged.append(str(number))
            assert refused_at is not None, "MAIL was never refused for want of space"
            _fill(disk / "filler-2", 0)  # to the last byte: the next 250s cannot be recorded
            assert _send(port, 999) == 452
            _until(
                lambda: set(_received(dump)) >= set(acknowledged),
                "every acknowledged message at the next hop",
                60,
            )
            time.sleep(5)  # with the disk still full: a resend storm would show here
            received = _received(dump)
            assert server.poll() is None, "the server stopped"
            assert set(received) == set(acknowledged)
            assert max(received.values()) == 1, received.most_common(3)

            for filler in ("filler", "filler-2"):
                (disk / filler).unlink()
            _until(lambda: _queued(data_dir) == 0, "the kept results written", 60)
            _until(lambda: _send(port, 1000) == 250, "MAIL accepted again", 10)
            acknowledged.append("1000")
            _until(lambda: "1000" in _received(dump), "new mail delivered", 30)
            assert server.poll() is None
        received = _received(dump)
    text = log.read_text(errors="replace")
    print(
        f"disk full: {len(acknowledged)} acknowledged, MAIL refused after {refused_at}, "
        f"{sum(received.values())} received, log {len(text)} bytes"
    )
    assert set(received) == set(acknowledged)
    assert max(received.values()) == 1, received.most_common(3)
    assert "recording delivery results failed" in text  # the path under test was taken
    assert text.count("failure(s) in") <= 4, text[-3000:]  # once a minute, not per message
    assert "below the reserve" in text
