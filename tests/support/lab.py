"""A running `sitemail lab` for tests: the article's three sites as real processes on a loopback
/24 of the test's own (`--net`, hidden), on free ports, with its own XDG_CONFIG_HOME, and always
brought down again (`sitemail lab down`, then a kill of any process of the lab still there).

Used by the lab's own tests (tests/integration/lab) and the console's end-to-end tests
(tests/e2e). Bringing a lab up walks the article's whole
procedure through the CLI: a minute or more, so one lab serves a whole module.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SITEMAIL = str(Path(sys.executable).parent / "sitemail")
# The whole article by CLI, then the records published and mail to the lab's Internet: 1-3
# minutes on a quiet 2-core machine, 6-7 at a load of 20 (eight helpers' suites at once).
LAB_UP_SECONDS = 720
SITES = {"SiteA": 10, "SiteB": 15, "SiteC": 20}  # last octet of each site's address


@dataclass
class RunningLab:
    root: Path
    net: str  # first three octets of the lab's loopback /24
    smtp_port: int
    dns_port: int
    env: dict[str, str]
    up_output: str = ""
    tokens: dict[str, str] = field(default_factory=dict)

    def address(self, site: str) -> str:
        return f"{self.net}.{SITES[site]}"

    @property
    def admin_port(self) -> int:
        """The lab gives each site's admin API (and console) the port after the six
        client-access ports that follow SMTP's."""
        return self.smtp_port + 7

    def console_url(self, site: str) -> str:
        return f"http://{self.address(site)}:{self.admin_port}"

    def data_dir(self, site: str) -> Path:
        return self.root / site

    def sitemail(
        self, *args: str, site: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """One `sitemail` command as an administrator types it (with `--data-dir` of `site`)."""
        command = [SITEMAIL, *args]
        if site is not None:
            command += ["--data-dir", str(self.data_dir(site))]
        proc = subprocess.run(
            command, capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"sitemail {' '.join(args)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def json(self, *args: str, site: str | None = None) -> Any:
        """A `sitemail ... --json` command's answer."""
        return json.loads(self.sitemail(*args, "--json", site=site).stdout)

    def token(self, site: str) -> str:
        """`sitemail admin token` of `site` (asked once: it stays until the file is deleted)."""
        if site not in self.tokens:
            self.tokens[site] = self.sitemail("admin", "token", site=site).stdout.strip()
        return self.tokens[site]

    def track(self, site: str, ref: str) -> list[dict[str, str]]:
        """`sitemail track REF --json` at `site` (no events yet: an empty list)."""
        proc = self.sitemail("track", ref, "--json", site=site, check=False)
        if proc.returncode != 0 or not proc.stdout.strip().startswith("["):
            return []
        events: list[dict[str, str]] = json.loads(proc.stdout)
        return events

    def delivered(self, site: str, ref: str, limit: float = 60) -> bool:
        """Whether `ref` is delivered at `site` within `limit` seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if any(e["event"] == "delivered" for e in self.track(site, ref)):
                return True
            time.sleep(0.5)
        return False

    def send_from_outside(self, rcpt: str, subject: str) -> str:
        """A message from "the Internet" to the company MX (SiteA); its Message-ID."""
        message_id = f"<e2e.{uuid.uuid4().hex[:12]}@outside.example>"
        with smtplib.SMTP(self.address("SiteA"), self.smtp_port, "outside.example", 30) as smtp:
            smtp.sendmail(
                "someone@outside.example",
                [rcpt],
                f"From: someone@outside.example\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
                f"Message-ID: {message_id}\r\n\r\nhello\r\n",
            )
        return message_id


def bindable(address: str, port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def free_port_everywhere(
    addresses: list[str], kind: socket.SocketKind = socket.SOCK_STREAM, count: int = 1
) -> int:
    """A port P with P .. P+count-1 free on every one of `addresses` (the lab uses the same
    ports at every site: SMTP, IMAP, POP3 and submission in the six after it, then the
    admin API)."""
    with socket.socket() as probe:
        probe.bind((addresses[0], 0))
        start = int(probe.getsockname()[1])
    for port in range(min(start, 65000), 65500):
        span = range(port, port + count)
        if all(bindable(a, p, kind) for a in addresses for p in span):
            return port
    raise RuntimeError("no common free ports")


@contextmanager
def running_lab(root: Path, net: str) -> Iterator[RunningLab]:
    """`sitemail lab up --detach` in `root` on `net`; `sitemail lab down` when done, whatever
    happened (and a kill of any lab process that outlived it)."""
    addresses = [f"{net}.{octet}" for octet in SITES.values()]
    smtp_port = free_port_everywhere(addresses, socket.SOCK_STREAM, 8)
    dns_port = free_port_everywhere([f"{net}.53"], socket.SOCK_DGRAM)
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(root.parent / "config"),  # the user's default data dir is not ours
        "COLUMNS": "200",
    }
    env.pop("SITEMAIL_DATA_DIR", None)
    lab = RunningLab(root, net, smtp_port, dns_port, env)
    started: list[int] = []
    try:
        proc = lab.sitemail(
            "lab", "up", "--detach", "--dir", str(root), "--net", net,
            "--smtp-port", str(smtp_port), "--dns-port", str(dns_port), check=False,
            timeout=LAB_UP_SECONDS,
        )  # fmt: skip
        lab.up_output = proc.stdout
        started = lab_pids(root)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
        yield lab
    finally:
        started = lab_pids(root) or started
        lab.sitemail("lab", "down", "--dir", str(root), check=False)
        for pid in started:  # should the folder have gone (another run's temp clean-up)
            if str(root).encode() in _cmdline(pid):
                os.kill(pid, signal.SIGKILL)


def existing_lab(root: Path, config_home: Path) -> RunningLab:
    """A lab somebody else brought up in `root` (and keeps running): used as it is."""
    state = json.loads((root / "lab.json").read_text())
    env = {**os.environ, "XDG_CONFIG_HOME": str(config_home), "COLUMNS": "200"}
    env.pop("SITEMAIL_DATA_DIR", None)
    return RunningLab(root, state["net"], state["smtp_port"], state["dns_port"], env)


def lab_pids(root: Path) -> list[int]:
    try:
        return list(json.loads((root / "lab.json").read_text())["pids"].values())
    except (OSError, ValueError, KeyError):
        return []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
