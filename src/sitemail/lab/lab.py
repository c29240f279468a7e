"""The lab: the article's organisation on this machine, set up the way the article says.

One job: bring up ExchangeORG with SiteA/ServerA (127.10.10.10), SiteB/ServerB (127.10.10.15)
and SiteC/ServerC (127.10.10.20), each its own `sitemail serve` process with its own data dir
under the lab folder, and an embedded DNS server (127.10.10.53) serving the article's records;
then walk the article's procedure, step by step under its own headings. Every step runs the
`sitemail` command an administrator would type (a subprocess: the lab uses no private door),
so the lab is also the widest integration test there is.

The lab folder holds `lab.json` (addresses, ports, the ids of the processes it started),
`dns.zone` (the records; edit it and the DNS server reloads it), one data dir per site and
`logs/`. `lab up` on an existing folder reuses it: processes that run are left alone, the
others are started, and steps already done are not done again. `lab down` stops only the
processes this lab started (their ids are checked against their command lines first).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import secrets
import shlex
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import dns.exception
import dns.resolver

from sitemail.core.errors import ConfigError
from sitemail.lab.internet import INTERNET_DOMAIN, INTERNET_HOST, INTERNET_OCTET, received
from sitemail.lab.outbound import OUTSIDE_RECIPIENT, Submission, submit, wait_for_arrival
from sitemail.lab.published import MARKER, write_published_zone

__all__ = [
    "COMPANY_DOMAIN",
    "NET",
    "PASSWORDS_FILE",
    "SITES",
    "Lab",
    "LabError",
    "LabSite",
    "LabState",
    "lab_sites",
    "zone_text",
]

ORG = "ExchangeORG"
COMPANY_DOMAIN = "example.com"
NET = "127.10.10"  # the article's addresses: SiteA .10, SiteB .15, SiteC .20; DNS .53
DNS_HOST = 53
STATE_FILE = "lab.json"
ZONE_FILE = "dns.zone"
PASSWORDS_FILE = "passwords.txt"  # the lab mailboxes' passwords, for mail clients
OUTSIDER = "someone@internet.example"
# Seconds `stop` waits after SIGTERM before SIGKILL: a site's default [server]
# shutdown_timeout (30 s: deliveries in flight finish) and a margin.
_STOP_WAIT = 35.0


class LabError(ConfigError):
    """The lab cannot go on (exit 78): the message says what to change."""


@dataclass(frozen=True, slots=True)
class LabSite:
    name: str
    server: str
    address: str
    users: tuple[tuple[str, str], ...]  # (alias, display name)

    @property
    def domain(self) -> str:
        return f"{self.name.lower()}.{COMPANY_DOMAIN}"

    @property
    def host(self) -> str:
        return f"{self.server.lower()}.{self.domain}"


SITES = (
    LabSite("SiteA", "ServerA", "127.10.10.10", (("user1", "User One"), ("jsmith", "John Smith"))),
    LabSite("SiteB", "ServerB", "127.10.10.15", (("user2", "User Two"), ("mjones", "Mary Jones"))),
    LabSite("SiteC", "ServerC", "127.10.10.20", (("user3", "User Three"), ("pbrown", "Pat Brown"))),
)


def lab_sites(net: str = NET) -> tuple[LabSite, ...]:
    """The three sites on `net` (a /24 of loopback given by its first three octets)."""
    return tuple(replace(s, address=f"{net}.{s.address.rsplit('.', 1)[1]}") for s in SITES)


def zone_text(sites: tuple[LabSite, ...]) -> str:
    """The article's records (Prerequisites 3 and 4) on loopback; MX targets are the servers'
    A records (the article's own example names Server1 in the MX but ServerA in the A record:
    seed X3). DNS has no ports: a lab on another port than 25 is reached through the domain
    routes, which name the port."""
    lines = [f"$ORIGIN {COMPANY_DOMAIN}.", "$TTL 60"]
    lines.append(f"@ IN MX 10 {sites[0].host}.")
    for site in sites:
        lines.append(f"{site.domain}. IN MX 10 {site.host}.")
        lines.append(f"{site.host}. IN A {site.address}")
    return "\n".join(lines) + "\n"


@dataclass(slots=True)
class LabState:
    smtp_port: int = 25
    net: str = NET
    dns_port: int = 53
    pids: dict[str, int] = field(default_factory=dict)
    set_up: bool = False  # the article's procedure has been done once

    @classmethod
    def load(cls, root: Path) -> LabState | None:
        path = root / STATE_FILE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise LabError(
                f"{path} is damaged ({exc}): remove the lab folder and start again"
            ) from exc

    def save(self, root: Path) -> None:
        path = root / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @property
    def dns_address(self) -> str:
        return f"{self.net}.{DNS_HOST}"


def sitemail_command() -> list[str]:
    """The `sitemail` of this installation (next to this interpreter), as a command line."""
    script = Path(sys.executable).parent / "sitemail"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from sitemail.main import main; main()"]


def _process_is_ours(pid: int, root: Path) -> bool:
    """Whether `pid` is a process this lab started (its command line names the lab folder)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    text = b" ".join(cmdline).decode("utf-8", "replace")
    return "sitemail" in text and str(root) in text


def _can_bind(address: str, port: int, kind: socket.SocketKind) -> OSError | None:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            return exc
    return None


def _bind_advice(address: str, port: int, what: str, name: str, problem: OSError) -> str:
    """Why `address:port` cannot be used, and what to change."""
    flag = "--dns-port" if name == "dns" else "--smtp-port"
    reason = problem.strerror or str(problem)
    if problem.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot use {address} for {what}: {reason}. The lab needs the loopback addresses "
            f"of the article; on Linux all of 127.0.0.0/8 is loopback, elsewhere add it "
            f"(e.g. `sudo ifconfig lo0 alias {address}` on macOS)"
        )
    if problem.errno == errno.EACCES:
        return (
            f"cannot use {address}:{port} for {what}: {reason}. Ports below 1024 need root: "
            f"run as root, or choose another port with {flag} (e.g. {flag} "
            f"{5353 if name == 'dns' else 2525})"
        )
    return (
        f"cannot use {address}:{port} for {what}: {reason}. Is another lab or mail server "
        f"running there? Stop it (`sitemail lab down`), or choose another port with {flag}"
    )


class Lab:
    """One lab folder: its processes and the article's procedure."""

    def __init__(
        self,
        root: Path,
        *,
        smtp_port: int | None = None,  # None: as the existing lab has it, else 25
        dns_port: int | None = None,  # likewise, else 53
        net: str | None = None,  # likewise, else NET
        say: Callable[[str], None] = print,
        heading: Callable[[str], None] | None = None,
        probe: Callable[[Path], dict[str, Any]] | None = None,
    ) -> None:
        self.root = root.resolve()
        self.say = say
        self.heading = heading or (lambda text: say(f"\n== {text} =="))
        self.probe = probe
        self._local = threading.local()  # a per-site step's output, printed in order later
        self._lock = threading.Lock()  # the state file and passwords.txt, from several steps
        existing = LabState.load(self.root)
        asked = {"smtp_port": smtp_port, "dns_port": dns_port, "net": net}
        given = {name: value for name, value in asked.items() if value is not None}
        self.state = existing or LabState(**given)  # type: ignore[arg-type]
        # Options the existing lab keeps: its data dirs are configured for its own.
        self.ignored = [
            f"{name} {getattr(self.state, name)} (not {value})"
            for name, value in given.items()
            if getattr(self.state, name) != value
        ]
        self.sites = lab_sites(self.state.net)
        self.started: list[str] = []  # processes this `lab up` started (or restarted)
        self.reused: list[str] = []  # processes it found running and left alone

    # -- output, and the sites' steps at once ----------------------------------------------

    def _print(self, text: str, *, heading: bool = False) -> None:
        """Say it now, or keep it for later when a per-site step runs in this thread."""
        buffer: list[tuple[bool, str]] | None = getattr(self._local, "buffer", None)
        if buffer is not None:
            buffer.append((heading, text))
        elif heading:
            self.heading(text)
        else:
            self.say(text)

    def _print_heading(self, text: str) -> None:
        self._print(text, heading=True)

    def _at_each_site(
        self, step: Callable[[LabSite], object], sites: Sequence[LabSite] | None = None
    ) -> None:
        """Run `step` for every site at once, then print what each printed, in the article's
        order. The steps are independent (each runs its own site's commands on its own data
        dir), and every command starts a Python process: done together they take a third of
        the time. The first failure is raised once everything has been printed."""
        chosen = list(self.sites if sites is None else sites)

        def captured(site: LabSite) -> tuple[list[tuple[bool, str]], BaseException | None]:
            self._local.buffer = []
            try:
                step(site)
            except Exception as exc:  # raised below, after the output that led to it
                return self._local.buffer, exc
            finally:
                buffer, self._local.buffer = self._local.buffer, None
            return buffer, None

        with ThreadPoolExecutor(max_workers=max(1, len(chosen))) as pool:
            outcomes = list(pool.map(captured, chosen))
        for lines, _ in outcomes:
            for is_heading, text in lines:
                self._print(text, heading=is_heading)
        for _, error in outcomes:
            if error is not None:
                raise error

    # -- places -----------------------------------------------------------------------------

    def data_dir(self, site: LabSite) -> Path:
        return self.root / site.name

    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def nameserver(self) -> str:
        return f"{self.state.dns_address}:{self.state.dns_port}"

    def hop(self, site: LabSite) -> str:
        """Where another site forwards mail for `site` ("forward to host", with the port when
        the lab does not use 25)."""
        port = self.state.smtp_port
        return site.address if port == 25 else f"{site.address}:{port}"

    # -- the sitemail CLI -------------------------------------------------------------------

    def run(self, *args: str, site: LabSite | None = None, ok: tuple[int, ...] = (0,)) -> str:
        """One `sitemail` command, as an administrator would type it; its output."""
        command = [*sitemail_command(), *args]
        if site is not None:
            command += ["--data-dir", str(self.data_dir(site))]
        env = {**os.environ, "XDG_CONFIG_HOME": str(self.root / ".config")}
        proc = subprocess.run(  # noqa: S603 - our own CLI, arguments from the lab's constants
            command, capture_output=True, text=True, timeout=120, env=env, check=False
        )
        if proc.returncode not in ok:
            shown = " ".join(args)
            raise LabError(
                f"`sitemail {shown}` failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()}"
            )
        return proc.stdout

    def show(self, *args: str, site: LabSite, lines: int = 12) -> str:
        """Run a step and print it the way a person would see it in a terminal (the command
        quoted as a shell would need it, then the first `lines` of its output)."""
        self._print(f"  [{site.name}] $ sitemail {shlex.join(args)}")
        out = self.run(*args, site=site, ok=(0, 73))
        for line in out.strip().splitlines()[:lines]:
            self._print(f"      {line}")
        return out

    # -- processes --------------------------------------------------------------------------

    def reap(self) -> None:
        """Collect the exit of every process this `lab up` started that has ended (a site
        killed under a foreground lab stays `<defunct>` until its parent does this)."""
        for pid in self.state.pids.values():
            with contextlib.suppress(ChildProcessError):  # not our child: another `lab up`'s
                os.waitpid(pid, os.WNOHANG)

    def alive(self) -> dict[str, bool]:
        self.reap()
        return {
            name: _process_is_ours(pid, self.root) for name, pid in sorted(self.state.pids.items())
        }

    def running(self) -> bool:
        alive = self.alive()
        return bool(alive) and all(alive.values()) and len(alive) == len(self.sites) + 2

    def check_addresses(self) -> None:
        """Every address and port the lab needs is free and bindable (else say what to do)."""
        ports = [
            self.state.smtp_port,
            *(p for pair in self.client_ports().values() for p in pair),
            self.admin_port(),
        ]
        wanted = [(s.address, p, socket.SOCK_STREAM, s.name) for s in self.sites for p in ports]
        wanted += [
            (self.state.dns_address, self.state.dns_port, kind, "the DNS server")
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)
        ]
        wanted.append((self.internet_address, self.state.smtp_port, socket.SOCK_STREAM, "internet"))
        alive = self.alive()
        for address, port, kind, what in wanted:
            name = "dns" if what == "the DNS server" else what
            if alive.get(name):
                continue
            problem = _can_bind(address, port, kind)
            if problem is not None:
                raise LabError(_bind_advice(address, port, what, name, problem))

    def _spawn(self, name: str, args: list[str]) -> int:
        self.log_path(name).parent.mkdir(parents=True, exist_ok=True)
        with self.log_path(name).open("ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - our own CLI
                [*sitemail_command(), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal reaches the lab, which stops it
            )
        with self._lock:
            self.state.pids[name] = proc.pid
            self.state.save(self.root)
        return proc.pid

    def _note(self, name: str, *, started: bool) -> None:
        with self._lock:
            (self.started if started else self.reused).append(name)

    def start_dns(self) -> None:
        if self.alive().get("dns"):
            self._note("dns", started=False)
            return
        self._note("dns", started=True)
        zone = self.root / ZONE_FILE
        if not zone.exists():
            zone.write_text(zone_text(self.sites), encoding="utf-8")
        self._spawn(
            "dns",
            [
                "lab",
                "dns-serve",
                "--zone",
                str(zone),
                "--address",
                self.state.dns_address,
                "--port",
                str(self.state.dns_port),
            ],
        )
        self._wait(self._dns_answers, "the lab's DNS server to answer", "dns")

    def _dns_answers(self) -> bool:
        try:
            self.resolve(COMPANY_DOMAIN, "MX")
        except dns.exception.DNSException:
            return False
        return True

    @property
    def internet_address(self) -> str:
        return f"{self.state.net}.{INTERNET_OCTET}"

    def start_internet(self) -> None:
        """The lab's Internet: the outside mail server for internet.test (lab/internet.py)."""
        if self.alive().get("internet"):
            self._note("internet", started=False)
            return
        self._note("internet", started=True)
        self._spawn(
            "internet",
            [
                "lab", "internet-serve", "--dir", str(self.root), "--address",
                self.internet_address, "--port", str(self.state.smtp_port),
                "--nameserver", self.nameserver(),
            ],
        )  # fmt: skip
        self._wait(self._internet_greets, "the lab's Internet", "internet")

    def _internet_greets(self) -> bool:
        try:
            with socket.create_connection((self.internet_address, self.state.smtp_port), 1) as s:
                s.settimeout(2)
                return s.recv(4).startswith(b"220")
        except OSError:
            return False

    def resolve(self, name: str, rtype: str) -> list[str]:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.state.dns_address]
        resolver.port = self.state.dns_port
        resolver.lifetime = 2.0
        return [r.to_text() for r in resolver.resolve(name, rtype)]

    def start_site(self, site: LabSite) -> None:
        if self.alive().get(site.name):
            self._note(site.name, started=False)
            return
        self._note(site.name, started=True)
        self._spawn(site.name, ["serve", "--data-dir", str(self.data_dir(site))])
        self._wait(lambda: self._greets(site), f"{site.name}'s SMTP service", site.name)

    def _greets(self, site: LabSite) -> bool:
        try:
            with socket.create_connection((site.address, self.state.smtp_port), timeout=1) as s:
                s.settimeout(2)
                return s.recv(4).startswith(b"220")
        except OSError:
            return False

    def _wait(self, check: Callable[[], bool], what: str, name: str, limit: float = 30) -> None:
        deadline = time.monotonic() + limit
        while not check():
            if not self.alive().get(name):
                tail = self.log_path(name).read_text(errors="replace")[-1500:]
                raise LabError(f"{what} did not start; its log ({self.log_path(name)}):\n{tail}")
            if time.monotonic() > deadline:
                raise LabError(f"waited {limit:.0f} s for {what}; see {self.log_path(name)}")
            time.sleep(0.1)

    def stop(self) -> list[str]:
        """Stop every process this lab started; returns their names. The state file is read
        again first: another `lab up` may have restarted a site since this one started."""
        on_disk = LabState.load(self.root)
        if on_disk is not None:
            self.state.pids = {**self.state.pids, **on_disk.pids}
        stopped = []
        for name, pid in sorted(self.state.pids.items()):
            if _process_is_ours(pid, self.root):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                stopped.append(name)
        deadline = time.monotonic() + _STOP_WAIT
        for name, pid in sorted(self.state.pids.items()):
            while _process_is_ours(pid, self.root) and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.05)
            if _process_is_ours(pid, self.root):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._print(f"  {name} did not stop within {_STOP_WAIT:g} s: killed")
        self.state.pids = {}
        if on_disk is not None:  # a lab refused before it was written stays unwritten
            self.state.save(self.root)
        return stopped

    # -- the article ------------------------------------------------------------------------

    def up(self, *, send_test: bool = False) -> None:
        """Start what is not running; on a new lab, walk the whole procedure and send the
        test mail (again later only with `send_test`)."""
        if self.ignored:
            self._print(
                f"  this lab ({self.root}) keeps {', '.join(self.ignored)}: its sites are "
                "configured for them; `sitemail lab down` and a new --dir for other ones"
            )
        self.check_addresses()  # before anything is written: a refused lab leaves nothing
        self.root.mkdir(parents=True, exist_ok=True)
        self.state.save(self.root)
        self._print_heading("Prerequisites: DNS records (MX and A) for every site and the company")
        self.start_dns()
        for line in (self.root / ZONE_FILE).read_text().partition(MARKER)[0].splitlines()[2:]:
            self._print(f"  {line}")
        self._print(f"  served by the lab's DNS server on {self.nameserver()}")
        new = [s for s in self.sites if not (self.data_dir(s) / "sitemail.toml").exists()]
        self._at_each_site(self._install, new)
        self._at_each_site(self.start_site)
        self.start_internet()
        self._say_reused(new)
        first_time = not self.state.set_up
        if first_time:
            self._procedure()
            self.state.set_up = True
            self.state.save(self.root)
        self.publish_records()
        if first_time or send_test:
            self._print_heading(
                "Mail from the Internet to user@example.com, through the company MX"
            )
            self.send_test_mail()
        else:
            self._print("  no test mail sent (the lab was set up before): `--send-test` sends it")
        self._print_heading(f"Mail from a user of each site to the Internet ({OUTSIDE_RECIPIENT})")
        self.mail_the_internet()

    def _say_reused(self, new: Sequence[LabSite]) -> None:
        """What this `lab up` found running, what it (re)started and which sites it made."""
        pids = self.state.pids
        order = ["dns", "internet", *(s.name for s in self.sites)]

        def named(names: list[str]) -> str:
            return ", ".join(f"{n} (pid {pids[n]})" for n in order if n in names and n in pids)

        if self.reused:
            self._print(f"  reused, already running: {named(self.reused)}")
        made = {s.name for s in new} | (
            {"dns", "internet"} if len(new) == len(self.sites) else set()
        )
        restarted = [n for n in self.started if n not in made]
        if restarted:
            self._print(f"  started again (were not running): {named(restarted)}")
        if made:
            self._print(f"  created and started: {named(list(made))}")

    def _install(self, site: LabSite) -> None:
        self._print_heading(f"Install the Internet Mail Service at {site.name} ({site.domain})")
        self.show(
            "init",
            "--org",
            ORG,
            "--site",
            site.name,
            "--server",
            site.server,
            "--domain",
            site.domain,
            "--listen",
            site.address,
            site=site,
        )
        self._configure(site)
        for alias, name in site.users:
            secret = self._password_file(site, alias)
            self.show(
                "mailbox", "add", alias, "--name", name, "--password-file", str(secret),
                site=site, lines=0,
            )  # fmt: skip

    def _password_file(self, site: LabSite, alias: str) -> Path:
        """A new random password for a lab mailbox, in a file only its owner reads (the form
        `--password-file` takes); `passwords.txt` lists them all for mail clients."""
        folder = self.root / "passwords"
        folder.mkdir(mode=0o700, exist_ok=True)
        password = secrets.token_urlsafe(12)
        path = folder / f"{alias}.txt"
        path.touch(mode=0o600)
        path.write_text(password + "\n", encoding="utf-8")
        listing = self.root / PASSWORDS_FILE
        with self._lock:
            listing.touch(mode=0o600)
            with listing.open("a", encoding="utf-8") as out:
                out.write(f"{alias}@{COMPANY_DOMAIN} ({site.name}) {password}\n")
        return path

    def client_ports(self) -> dict[str, tuple[int, int]]:
        """IMAP, POP3 and submission ports (plain or STARTTLS, implicit TLS): the standard ones
        with SMTP on 25, else the six ports after the SMTP port (no root needed)."""
        port = self.state.smtp_port
        if port == 25:
            return {"imap": (143, 993), "pop3": (110, 995), "submission": (587, 465)}
        return {
            name: (port + 1 + 2 * i, port + 2 + 2 * i)
            for i, name in enumerate(("imap", "pop3", "submission"))
        }

    def admin_port(self) -> int:
        """The admin HTTP API's port: its default with SMTP on 25, else the one after the
        client-access ports."""
        port = self.state.smtp_port
        return 8025 if port == 25 else port + 7

    def _configure(self, site: LabSite) -> None:
        """What an administrator writes in the config file: the lab's DNS server, the ports,
        and a start-up replication request after a few seconds instead of five minutes."""
        path = self.data_dir(site) / "sitemail.toml"
        text = path.read_text(encoding="utf-8")
        port = self.state.smtp_port
        text = text.replace("\n[smtp]\n", f"\n[smtp]\nport = {port}\noutbound_port = {port}\n", 1)
        for section, (plain, tls) in self.client_ports().items():
            text = text.replace(
                f"\n[{section}]\n", f"\n[{section}]\nport = {plain}\ntls_port = {tls}\n", 1
            )
        text = text.replace("\n[admin]\n", f"\n[admin]\nport = {self.admin_port()}\n", 1)
        text = text.replace("\n[dns]\n", f'\n[dns]\nnameservers = ["{self.nameserver()}"]\n', 1)
        text = text.replace("\n[replication]\n", "\n[replication]\nstartup_delay = 5\n", 1)
        path.write_text(text, encoding="utf-8")
        self._print(f"  [{site.name}] sitemail.toml: [smtp] port {port}, [dns] {self.nameserver()}")

    def _procedure(self) -> None:
        self._connected_sites()
        self._domain_routes()
        self._replication_connectors()
        self._initial_replication()
        self._single_domain()

    def _others(self, site: LabSite) -> list[LabSite]:
        return [other for other in self.sites if other is not site]

    def _connected_sites(self) -> None:
        self._print_heading(
            "How to Set Up the Internet Mail Service and Connectors to the Remote Sites"
        )

        def step(site: LabSite) -> None:
            for other in self._others(site):
                self.show(
                    "connected-site", "add", other.name, "--routing-address",
                    f"@{other.name}.{COMPANY_DOMAIN}", site=site,
                )  # fmt: skip

        self._at_each_site(step)

    def _domain_routes(self) -> None:
        self._print_heading("Making Domain-Specific Routing Entries")

        def step(site: LabSite) -> None:
            for other in self._others(site):
                self.show("domain-route", "add", other.domain, self.hop(other), site=site)

        self._at_each_site(step)

    def _replication_connectors(self) -> None:
        self._print_heading(
            "Setting up Directory Replication by means of the Internet Mail Service"
        )
        # The key exchange an admin does: read `sitemail site key` at the other site.
        keys: dict[str, str] = {}

        def read_key(site: LabSite) -> None:
            keys[site.name] = self.run("site", "key", site=site).splitlines()[0].strip()

        self._at_each_site(read_key)

        def step(site: LabSite) -> None:
            for other in self._others(site):
                self.show(
                    "replication", "connector", "add", other.name, "--bridgehead", other.server,
                    "--routing-address", other.domain, "--peer-key", keys[other.name], site=site,
                )  # fmt: skip

        self._at_each_site(step)

    def _check_now(self) -> None:
        self._at_each_site(lambda site: self.show("kcc", "check-now", site=site))

    def _initial_replication(self) -> None:
        self._print_heading("Speeding up Initial Directory Replication between Sites")
        self._check_now()

        def step(site: LabSite) -> None:
            for other in self._others(site):
                self.show("replication", "request-now", other.name, site=site)

        self._at_each_site(step)
        self._wait_replicated({s.name: s.domain for s in self.sites})
        self._check_now()

    def _pull_from(self, source: LabSite, site: LabSite) -> None:
        """Request Now at `site` from `source` (the article: "Request Now" after a change)."""
        self.show("replication", "request-now", source.name, site=site)

    def _single_domain(self) -> None:
        self._print_heading(
            "Setting up a Single E-mail Domain, <CompanyName>.com, for All Users in All Sites"
        )
        for site in self.sites:  # one site after the other, each change replicated before the next
            self.show(
                "addressing", "set", "smtp", f"@{COMPANY_DOMAIN}", "--update-recipients", site=site
            )
            self._at_each_site(functools.partial(self._pull_from, site), self._others(site))
            self._wait_replicated({site.name: COMPANY_DOMAIN})

    def _wait_replicated(self, domains: dict[str, str], limit: float = 90) -> None:
        """Until every site routes the first user of each named site, at that domain, there."""
        self._print("  waiting for replication to complete ...")
        deadline = time.monotonic() + limit

        def knows_them_all(site: LabSite) -> None:
            for home in self._others(site):
                if home.name in domains:
                    self._until_routed(
                        site, home, f"{home.users[0][0]}@{domains[home.name]}", deadline, limit
                    )

        self._at_each_site(knows_them_all)
        self._print("  replicated: every site knows the others' recipients")

    def _until_routed(
        self, site: LabSite, home: LabSite, address: str, deadline: float, limit: float
    ) -> None:
        while True:
            explained = json.loads(self.run("route", "explain", address, "--json", site=site))
            if explained.get("site") == home.name:
                return
            if time.monotonic() > deadline:
                raise LabError(
                    f"{site.name} still does not know {address} after {limit:.0f} s: "
                    f"see `sitemail replication status --data-dir {self.data_dir(site)}`"
                )
            time.sleep(0.5)

    # -- what the world sees: DNS records, the lab's Internet --------------------------------

    def publish_records(self) -> None:
        """Put every record `sitemail dns records` lists at each site in the lab's DNS, with
        the reverse zone and the lab's Internet (what an admin does at the registrar)."""
        self._print_heading(
            "Publishing the records of `sitemail dns records` (MX, A, PTR, SPF, DKIM, DMARC)"
        )
        found: dict[str, list[dict[str, Any]]] = {}

        def records(site: LabSite) -> None:
            out = self.run("dns", "records", "--site", site.name, "--json", site=site)
            found[site.name] = json.loads(out)["records"]

        self._at_each_site(records)
        unique = {r["zone"]: r["kind"] for site in self.sites for r in found[site.name]}
        written = write_published_zone(
            self.root / ZONE_FILE, self.state.net, unique, COMPANY_DOMAIN
        )
        kinds: dict[str, int] = {}
        for kind in unique.values():
            kinds[kind] = kinds.get(kind, 0) + 1
        shown = ", ".join(f"{count} {kind.upper()}" for kind, count in kinds.items())
        self._print(f"  $ sitemail dns records --site <site> at each site: {shown}")
        self._print(f"  {written} records added to {self.root / ZONE_FILE}, with reverse (PTR)")
        self._print(
            f"  the lab's Internet: {INTERNET_DOMAIN} MX {INTERNET_HOST} "
            f"({self.internet_address}:{self.state.smtp_port})"
        )

    def mail_the_internet(self) -> list[tuple[str, bool, str]]:
        """One message from the first user of each site to the lab's Internet, through the
        site's submission port; shows whether it arrived and its DKIM verdict there. Returns
        (site, delivered, dkim)."""
        plain = self.client_ports()["submission"][0]
        sent = []
        for site in self.sites:
            alias, name = site.users[0]
            secret = (self.root / "passwords" / f"{alias}.txt").read_text().strip()
            login = f"{alias}@{COMPANY_DOMAIN}"
            message_id = submit(Submission(site.address, plain, login, secret, name))
            self._print(f"  [{site.name}] {login} -> {OUTSIDE_RECIPIENT} ({message_id})")
            sent.append((site, message_id))
        with ThreadPoolExecutor(max_workers=len(sent)) as pool:
            arrivals = list(pool.map(lambda item: wait_for_arrival(self.root, item[1]), sent))
        results = []
        for (site, _), arrival in zip(sent, arrivals, strict=True):
            if arrival is None:
                self._print(f"  {site.name}: NOT delivered to {INTERNET_DOMAIN} (yet)")
                results.append((site.name, False, ""))
                continue
            self._print(
                f"  {site.name}: delivered to {INTERNET_DOMAIN}, dkim={arrival.dkim} "
                f"({arrival.signer})"
            )
            results.append((site.name, True, arrival.dkim))
        return results

    # -- the proof ---------------------------------------------------------------------------

    def mx_host(self) -> str:
        """The company domain's MX, then its address, through the lab's DNS (as a sender on
        the Internet would find it)."""
        mx = sorted(self.resolve(COMPANY_DOMAIN, "MX"), key=lambda r: int(r.split()[0]))
        host = mx[0].split()[1].rstrip(".")
        return self.resolve(host, "A")[0]

    def send_test_mail(self) -> list[tuple[str, str, bool]]:
        """One message from outside to one user of each site at the company domain and one to
        an old site address; shows where each arrived. Returns (address, site, arrived)."""
        address = self.mx_host()
        self._print(f"  MX of {COMPANY_DOMAIN} -> {address}:{self.state.smtp_port}")
        tests = [(f"{s.users[0][0]}@{COMPANY_DOMAIN}", s) for s in self.sites]
        old = self.sites[1]
        tests.append((f"{old.users[1][0]}@{old.domain}", old))  # kept as a secondary address
        sent = []
        with smtplib.SMTP(address, self.state.smtp_port, "internet.example", timeout=30) as smtp:
            for rcpt, home in tests:
                message_id = f"<lab.{uuid.uuid4().hex[:12]}@internet.example>"
                body = (
                    f"From: Someone <{OUTSIDER}>\r\nTo: <{rcpt}>\r\nSubject: Hello from the "
                    f"Internet\r\nMessage-ID: {message_id}\r\n\r\nOne domain for everybody.\r\n"
                )
                smtp.sendmail(OUTSIDER, [rcpt], body.encode())
                self._print(f"  sent to {rcpt} ({message_id})")
                sent.append((rcpt, home, message_id))
        with ThreadPoolExecutor(max_workers=len(sent)) as pool:
            arrivals = list(pool.map(lambda item: self._arrival(item[1], item[2]), sent))
        results = []
        for (rcpt, home, _), arrived in zip(sent, arrivals, strict=True):
            where = f"in {home.name}'s mailbox store" if arrived else "NOT arrived (yet)"
            self._print(f"  {rcpt:28} -> {where}")
            results.append((rcpt, home.name, arrived))
        return results

    def _arrival(self, site: LabSite, message_id: str, limit: float = 30) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            out = self.run("track", message_id, "--json", site=site, ok=(0, 66))
            events = json.loads(out) if out.strip().startswith("[") else []
            if any(e["event"] == "delivered" for e in events):
                return True
            time.sleep(0.3)
        return False

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        alive = self.alive()
        sites = []
        for site in self.sites:
            entry: dict[str, Any] = {
                "site": site.name,
                "server": site.server,
                "smtp": f"{site.address}:{self.state.smtp_port}",
                "client_ports": {k: list(v) for k, v in self.client_ports().items()},
                "running": alive.get(site.name, False),
                "pid": self.state.pids.get(site.name) if alive.get(site.name) else None,
                "data_dir": str(self.data_dir(site)),
            }
            if self.probe is not None and (self.data_dir(site) / "sitemail.toml").exists():
                entry.update(self.probe(self.data_dir(site)))
            sites.append(entry)
        return {
            "lab": str(self.root),
            "dns": {
                "address": self.nameserver(),
                "running": alive.get("dns", False),
                "pid": self.state.pids.get("dns") if alive.get("dns") else None,
            },
            "internet": {
                "domain": INTERNET_DOMAIN,
                "smtp": f"{self.internet_address}:{self.state.smtp_port}",
                "running": alive.get("internet", False),
                "pid": self.state.pids.get("internet") if alive.get("internet") else None,
                "received": len(received(self.root)),
            },
            "sites": sites,
            "set_up": self.state.set_up,
        }


@contextlib.contextmanager
def stopping_on_error(lab: Lab) -> Iterator[None]:
    """A failed `lab up` leaves nothing running behind it."""
    try:
        yield
    except BaseException:
        lab.stop()
        raise


def require_lab(root: Path, probe: Callable[[Path], dict[str, Any]] | None = None) -> Lab:
    if LabState.load(root.resolve()) is None:
        raise ConfigError(f"no lab in {root}: `sitemail lab up` makes one")
    return Lab(root, probe=probe)
