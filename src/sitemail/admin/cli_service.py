"""`sitemail service install`: the systemd unit of this server.

One job: parse and render for `admin.systemd`'s unit; registered on the main app by `cli.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from sitemail.admin.cli import DataDir, app, handle_errors, out
from sitemail.admin.datadir import resolve_data_dir
from sitemail.admin.privileges import ensure_user, hand_over
from sitemail.admin.systemd import UNIT_NAME, executable, unit_text
from sitemail.config import load_config

__all__ = ["service_app"]

service_app = typer.Typer(help="Run this server as a systemd service.", no_args_is_help=True)
app.add_typer(service_app, name="service")


@service_app.command("install")
@handle_errors
def service_install(
    data_dir: DataDir = None,
    unit_dir: Annotated[
        Path, typer.Option(help="Where to write the unit.", file_okay=False)
    ] = Path("/etc/systemd/system"),
) -> None:
    """Write the systemd unit (sitemail.service) that runs this data dir's server as
    [server] user, sandboxed; as root, also create that user and give it the data dir."""
    config = load_config(resolve_data_dir(data_dir).resolve())
    text = unit_text(config, executable())
    if os.geteuid() == 0:
        user = ensure_user(config.user)
        hand_over(config.data_dir, user.pw_uid, user.pw_gid)
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit = unit_dir / UNIT_NAME
    unit.write_text(text, encoding="utf-8")
    unit.chmod(0o644)  # systemd's units are world-readable; this one holds no secret
    out.print(f"wrote {unit}; start it with:")
    out.print("  systemctl daemon-reload && systemctl enable --now sitemail", markup=False)
    out.print("  journalctl -u sitemail -f        # its log", markup=False)
