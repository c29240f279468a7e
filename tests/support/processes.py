"""Real processes for tests: `sitemail serve` started, signalled and read back; Postfix's
smtp-sink. Each is started by the test and stopped by its own pid, never by name."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.serve import serve_command

SITEMAIL = Path(sys.executable).with_name("sitemail")
SMTP_SINK = shutil.which("smtp-sink") or (
    "/usr/sbin/smtp-sink" if os.access("/usr/sbin/smtp-sink", os.X_OK) else None
)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def wait_until(check: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {limit} s")
        time.sleep(0.05)


class ServeProcess:
    """`sitemail serve` as a real process (run with this interpreter, so no console script is
    needed); every incarnation logs to its own file, and `start` returns once it is ready."""

    def __init__(self, data_dir: Path, logs: Path, name: str = "") -> None:
        self.data_dir = data_dir
        self.logs = logs
        self.name = name or data_dir.name
        self.incarnations = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.start_times: list[float] = []  # seconds from spawn to "ready", per incarnation

    def log_path(self, n: int) -> Path:
        return self.logs / f"serve-{self.name}-{n}.log"

    def start(self) -> None:
        """Start an incarnation and wait for its "ready" line."""
        self.incarnations += 1
        log = self.log_path(self.incarnations)
        env = {k: v for k, v in os.environ.items() if k != "SITEMAIL_DATA_DIR"}
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                serve_command(self.data_dir), stdout=out, stderr=subprocess.STDOUT, env=env
            )
        spawned = time.monotonic()
        deadline = spawned + START_TIMEOUT
        while b"ready: " not in log.read_bytes():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} incarnation {self.incarnations} exited with "
                    f"{self.process.returncode} during start (recovery failed?):\n"
                    f"{log.read_text(errors='replace')}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} incarnation {self.incarnations} not ready in {START_TIMEOUT} s:"
                    f"\n{log.read_text(errors='replace')}"
                )
            time.sleep(0.02)
        self.start_times.append(time.monotonic() - spawned)

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the server."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)
        self.process = None

    def stop(self, limit: float = STOP_TIMEOUT) -> int:
        """SIGTERM; its exit status (AssertionError if it takes longer than `limit`)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=limit)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"no exit {limit} s after SIGTERM") from exc
        self.process = None
        return code

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)

    def problems(self) -> list[str]:
        """Log lines of any incarnation that report an error or a traceback."""
        found = []
        for n in range(1, self.incarnations + 1):
            for line in self.log_path(n).read_text(errors="replace").splitlines():
                if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
                    found.append(f"{self.log_path(n).name}: {line}")
        return found


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@contextmanager
def postfix_sink(folder: Path, host: str, *flags: str, port: int = 0) -> Iterator[tuple[int, Path]]:
    """Postfix's smtp-sink on `host` (on `port`, else a free one), dumping transactions to a
    file; stopped by its pid."""
    assert SMTP_SINK is not None
    port = port or free_port(host)
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
            except OSError as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"smtp-sink did not start: {errors.read_text(errors='replace')}"
                    ) from exc
                time.sleep(0.05)
        yield port, dump
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def configure(data_dir: Path, settings: dict[str, str]) -> None:
    """Add `key = value` lines (as TOML text) at the top of tables of the `sitemail.toml`
    that `sitemail init` wrote: {"smtp": "port = 2525", ...}."""
    config = data_dir / "sitemail.toml"
    text = config.read_text(encoding="utf-8")
    for table, lines in settings.items():
        assert f"[{table}]\n" in text, table
        text = text.replace(f"[{table}]\n", f"[{table}]\n{lines}\n", 1)
    config.write_text(text, encoding="utf-8")


# Tables that switch off every listener but SMTP's and the admin API (fewer ports to find).
SMTP_ONLY = {
    "admin": "port = 0",
    **dict.fromkeys(("imap", "pop3", "submission"), "port = 0\ntls_port = 0"),
}
