"""The `sitemail lab` commands: up (foreground with a live view, or --detach), status, down,
and the lab's DNS server process.

One job: parse and render for `lab.Lab`. The admin CLI's `lab` group is handed in by the
composition root (`site.py`), because the lab and the admin package are siblings that do not
import each other (DESIGN.md section 4).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from sitemail.core.clock import span
from sitemail.lab.dns_server import DnsRecord, EmbeddedDnsServer, parse_zone_text
from sitemail.lab.internet import serve_internet
from sitemail.lab.lab import (
    COMPANY_DOMAIN,
    PASSWORDS_FILE,
    Lab,
    require_lab,
    stopping_on_error,
)

__all__ = ["register"]

out = Console(highlight=False)
LabDir = Annotated[Path, typer.Option("--dir", help="The lab folder (data dirs, logs, lab.json).")]
SmtpPort = Annotated[
    int | None,
    typer.Option(
        "--smtp-port",
        help="SMTP port of every site (default 25, as in the article; an existing lab keeps its own).",
    ),
]
DnsPort = Annotated[
    int | None,
    typer.Option("--dns-port", help="Port of the lab's DNS server (default 53)."),
]
Probe = Callable[[Path], dict[str, Any]]


def _say(line: str) -> None:
    out.print(line, markup=False, soft_wrap=True)  # whole lines: commands stay copyable


def _heading(text: str) -> None:
    out.print(f"\n[bold]{text}[/bold]")


def register(
    app: typer.Typer,
    guard: Callable[[Callable[..., Any]], Callable[..., Any]],
    probe: Probe,
    make_current: Callable[[Path], object],
) -> None:
    """Add the lab commands to `app` (the CLI's `lab` group); `guard` maps errors to exit
    codes as for every other command, `probe` reads one site's queue, replication and recent
    deliveries from its data dir, `make_current` makes a data dir the default of later
    commands (as `sitemail init` does)."""

    @app.command("up")
    @guard
    def up(  # noqa: PLR0917 - Typer maps each parameter to an option
        lab_dir: LabDir = Path("lab"),
        detach: Annotated[
            bool, typer.Option("--detach", help="Return once the lab is ready; leave it running.")
        ] = False,
        smtp_port: SmtpPort = None,
        dns_port: DnsPort = None,
        net: Annotated[
            str | None,
            typer.Option(
                "--net", hidden=True, help="First three octets of the lab's loopback /24."
            ),
        ] = None,
        send_test: Annotated[
            bool,
            typer.Option(
                "--send-test",
                help="Send the test mail from the Internet again (a new lab always sends it).",
            ),
        ] = False,
    ) -> None:
        """Bring up the article's three sites (or reuse the lab folder) and walk its steps."""
        lab = Lab(
            lab_dir,
            smtp_port=smtp_port,
            dns_port=dns_port,
            net=net,
            say=_say,
            heading=_heading,
            probe=probe,
        )
        with stopping_on_error(lab):
            lab.up(send_test=send_test)
        first = lab.data_dir(lab.sites[0])
        make_current(first)
        _where(lab)
        out.print(
            f"  sitemail commands without --data-dir now act on {lab.sites[0].name} ({first})",
            markup=False,
        )
        if detach:
            out.print("\nThe lab keeps running: `sitemail lab status`, `sitemail lab down`.")
            return
        _live(lab)

    @app.command("status")
    @guard
    def status(
        lab_dir: LabDir = Path("lab"),
        as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    ) -> None:
        """Show the lab's processes, addresses and queues."""
        lab = require_lab(lab_dir, probe=probe)
        data = lab.status()
        if as_json:
            typer.echo(json.dumps(data, indent=2))
            return
        out.print(_view(data))

    @app.command("down")
    @guard
    def down(lab_dir: LabDir = Path("lab")) -> None:
        """Stop the lab's processes (its data stays; `lab up` starts it again)."""
        lab = require_lab(lab_dir)
        stopped = lab.stop()
        out.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")

    @app.command("dns-serve", hidden=True)
    @guard
    def dns_serve(
        zone: Annotated[Path, typer.Option("--zone")],
        address: Annotated[str, typer.Option("--address")],
        port: Annotated[int, typer.Option("--port")],
    ) -> None:
        """The lab's DNS server process: serves the zone file, reloading it when it changes."""
        _serve_dns(zone, address, port)

    @app.command("internet-serve", hidden=True)
    @guard
    def internet_serve(
        lab_dir: LabDir,
        address: Annotated[str, typer.Option("--address")],
        port: Annotated[int, typer.Option("--port")],
        nameserver: Annotated[str, typer.Option("--nameserver")],
    ) -> None:
        """The lab's Internet process: the outside mail server for internet.test."""
        host, _, dns_port = nameserver.rpartition(":")
        serve_internet(lab_dir.resolve(), address, port, (host, int(dns_port)))


_SHOWN = {"imap": "IMAP", "pop3": "POP3", "submission": "submission"}


def _where(lab: Lab) -> None:
    out.print("\n[bold]Where to connect[/bold]")
    for entry in lab.status()["sites"]:
        out.print(
            f"  {entry['site']}: SMTP {entry['smtp']}  (sitemail ... --data-dir "
            f"{entry['data_dir']})",
            markup=False,
        )
    ports = lab.client_ports()
    out.print(
        "  mail clients, at each site's address: "
        + ", ".join(f"{_SHOWN[name]} {plain}/{tls}" for name, (plain, tls) in ports.items())
        + f" (STARTTLS/TLS); log in as user1@example.com etc. with the passwords in "
        f"{lab.root / PASSWORDS_FILE}",
        markup=False,
        soft_wrap=True,
    )
    first = lab.status()["sites"][0]
    host = str(first["smtp"]).rpartition(":")[0]
    out.print(
        f"  web console and admin HTTP API at each site's address, port {lab.admin_port()}: "
        f"{first['site']}'s console is http://{host}:{lab.admin_port()}/console/ (log in with "
        f"`sitemail admin token --data-dir {first['data_dir']}`; `sitemail admin url` there)",
        markup=False,
        soft_wrap=True,
    )
    out.print(
        f"  DNS: {lab.nameserver()} (dig @{lab.state.dns_address} -p {lab.state.dns_port} "
        f"MX {COMPANY_DOMAIN})",
        markup=False,
    )
    internet = lab.status()["internet"]
    out.print(
        f"  the lab's Internet: mail to anyone@{internet['domain']} leaves each site by MX to "
        f"{internet['smtp']} and is kept, DKIM-checked, in {lab.root / 'internet'}",
        markup=False,
        soft_wrap=True,
    )


def _table(data: dict[str, Any]) -> Table:
    internet = data.get("internet", {})
    outside = (
        f", Internet {internet['smtp']}" if internet.get("running") else ", Internet NOT running"
    )
    table = Table(title=f"lab {data['lab']}  (DNS {data['dns']['address']}{outside})")
    for column in ("site", "server", "SMTP", "running", "queue", "replication"):
        table.add_column(column)
    for entry in data["sites"]:
        table.add_row(
            entry["site"],
            entry["server"],
            entry["smtp"],
            "yes" if entry["running"] else "NO",
            _queue_cell(entry),
            _replication_cell(entry),
        )
    return table


def _queue_cell(entry: dict[str, Any]) -> str:
    if "queue" not in entry:
        return "-"
    deferred = entry.get("deferred", 0)
    return f"{entry['queue']}" + (f" ({deferred} deferred)" if deferred else "")


def _replication_cell(entry: dict[str, Any]) -> str:
    """Each peer with its lag (time since the last complete exchange), or what it waits for."""
    parts = []
    for peer in entry.get("replication", []):
        lag = peer["lag_seconds"]
        if peer["waiting"]:
            parts.append(f"{peer['peer']}: waiting")
        elif lag is None:
            parts.append(f"{peer['peer']}: never")
        else:
            parts.append(f"{peer['peer']}: {span(lag)} ago")
    parts += [f"{p}: PENDING PARTNER" for p in entry.get("pending_partners", [])]
    return ", ".join(parts) or "-"


def _recent(data: dict[str, Any], limit: int = 8) -> Table:
    """The last final events (delivered, relayed, bounced) of every site, newest first; the
    detail column only where the terminal is wide enough to keep every line whole."""
    rows = [(e, entry["site"]) for entry in data["sites"] for e in entry.get("recent", [])]
    rows.sort(key=lambda pair: pair[0]["at"], reverse=True)
    wide = out.width >= 120
    table = Table(title="recent deliveries (replication mail left out)")
    for column in ("when", "site", "event", "recipient"):
        table.add_column(column, no_wrap=True)
    if wide:
        table.add_column("detail", no_wrap=True, overflow="ellipsis", max_width=60)
    for event, site in rows[:limit]:
        when = time.strftime("%H:%M:%S", time.localtime(event["at"]))
        cells = [when, site, event["event"], event["recipient"]]
        table.add_row(*cells, *([event["detail"]] if wide else []))
    return table


def _view(data: dict[str, Any]) -> Group:
    return Group(_table(data), _recent(data))


def _live(lab: Lab) -> None:
    """Refresh the status until Ctrl-C (or SIGTERM), then stop everything cleanly."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    out.print("\nLive status (Ctrl-C stops the lab):")
    try:
        with Live(_view(lab.status()), console=out, refresh_per_second=1) as live:
            while not stop.wait(2.0):
                live.update(_view(lab.status()))
    except KeyboardInterrupt:
        pass
    out.print("\nstopping the lab ...")
    lab.stop()
    out.print("stopped.")


def _parse_zone(text: str) -> tuple[DnsRecord, ...]:
    """The zone's records; a ValueError naming the first line that does not parse (so the
    DNS server keeps serving the last good zone and the log says what to correct)."""
    try:
        return parse_zone_text(text)
    except ValueError:
        lines = text.splitlines()
        for number in range(1, len(lines) + 1):
            try:
                parse_zone_text("\n".join(lines[:number]))
            except ValueError as exc:
                raise ValueError(f"line {number}: {lines[number - 1]!r}: {exc}") from None
        raise


def _serve_dns(zone: Path, address: str, port: int) -> None:
    server = EmbeddedDnsServer(address, port, zones=[COMPANY_DOMAIN])
    loaded = 0.0

    def reload() -> None:
        nonlocal loaded
        mtime = zone.stat().st_mtime
        if mtime == loaded:
            return
        records = _parse_zone(zone.read_text(encoding="utf-8"))  # a bad edit raises here
        served = server.resolver
        for old in served.zones():  # the published part adds zones (reverse, internet.test)
            served.remove_zone(old.origin)
        served.add_zone(COMPANY_DOMAIN)
        served.load(records)
        loaded = mtime

    reload()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        try:
            while not stop.wait(1.0):
                try:
                    reload()
                except (OSError, ValueError) as exc:  # a bad edit keeps the last good zone
                    _say(f"dns: cannot reload {zone} ({exc}); still serving the last good zone")
                    loaded = zone.stat().st_mtime if zone.exists() else loaded
        except KeyboardInterrupt:
            pass
