"""Postfix's smtp-sink as a test peer: started on a loopback address, dumping transactions."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.support.org import free_port

SMTP_SINK = shutil.which("smtp-sink") or (
    "/usr/sbin/smtp-sink" if os.access("/usr/sbin/smtp-sink", os.X_OK) else None
)


@contextmanager
def smtp_sink(host: str, folder: Path, *flags: str) -> Iterator[tuple[int, Path]]:
    """smtp-sink on `host` (a free port), appending transactions to a dump file in `folder`
    (`-D`), with smtp-sink's `flags`; (port, dump). Stopped by its pid."""
    assert SMTP_SINK is not None
    port = free_port(host)
    dump = folder / f"smtp-sink-{port}.dump"
    user = ["-u", pwd.getpwuid(os.geteuid()).pw_name] if os.geteuid() == 0 else []
    command = [SMTP_SINK, *user, "-D", str(dump), *flags, f"{host}:{port}", "16"]
    errors = folder / f"smtp-sink-{port}.err"
    with errors.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"smtp-sink did not start: {errors.read_text(errors='replace')}")
                time.sleep(0.05)
        yield port, dump
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
