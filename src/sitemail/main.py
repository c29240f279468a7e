"""The `sitemail` command: the admin CLI, `lab`, and `serve`.

One job: be the console-script entry point and stay light. Every admin command needs only
`sitemail.admin`; the server's whole stack (SMTP, IMAP, POP3, the web console, delivery) is
imported by `serve` alone, when it runs, so an admin command starts in well under a second
instead of paying for what only the server uses.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sitemail import __version__
from sitemail.admin import cli
from sitemail.admin.datadir import remember_data_dir, resolve_data_dir
from sitemail.admin.snapshot import site_snapshot
from sitemail.lab.cli import register as register_lab

__all__ = ["main"]


@cli.app.command("serve")
@cli.handle_errors
def serve(
    data_dir: cli.DataDir = None,
    allow_root: Annotated[
        bool,
        typer.Option(
            "--allow-root",
            envvar="SITEMAIL_ALLOW_ROOT",
            help="Started as root, stay root instead of switching to [server] user.",
        ),
    ] = False,
) -> None:
    """Run the server: SMTP listeners, the queue and delivery, until Ctrl-C or SIGTERM.
    Started as root, it binds its ports, then runs as [server] user (default sitemail)."""
    from sitemail.site import run_server  # noqa: PLC0415 - the server's stack, only to serve

    run_server(resolve_data_dir(data_dir), allow_root=allow_root)


register_lab(cli.lab_app, cli.handle_errors, site_snapshot, remember_data_dir)


def main() -> None:
    """Console-script entry point: the admin CLI plus `serve` and `lab`."""
    if sys.argv[1:] == ["--version"]:  # what an installation is, before anything else loads
        print(f"sitemail {__version__}")
        return
    cli.app()
