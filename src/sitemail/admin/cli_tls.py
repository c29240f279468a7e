"""`sitemail tls set` and `sitemail tls show`: this server's TLS certificate.

One job: parse and render for `admin.tls`; registered on the main app by `cli.py`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from sitemail.admin.cli import DataDir, JsonFlag, announce, app, emit_json, handle_errors, out
from sitemail.admin.datadir import resolve_data_dir
from sitemail.admin.tls import CertificateInfo, describe, install_certificate
from sitemail.config import load_config

__all__ = ["tls_app"]

tls_app = typer.Typer(
    help="This server's TLS certificate (SMTP, submission, IMAP, POP3, the admin port).",
    no_args_is_help=True,
)
app.add_typer(tls_app, name="tls")


def _show(info: CertificateInfo, as_json: bool) -> None:
    left = info.days_left(dt.datetime.now(dt.UTC))
    if as_json:
        emit_json(
            {
                "subject": info.subject,
                "issuer": info.issuer,
                "names": list(info.names),
                "not_before": info.not_before.isoformat(),
                "not_after": info.not_after.isoformat(),
                "self_signed": info.self_signed,
                "sha256": info.fingerprint,
            }
        )
        return
    rows = (
        ("subject", info.subject),
        ("issuer", info.issuer + ("  (self-signed)" if info.self_signed else "")),
        ("names", ", ".join(info.names) or "(none)"),
        (
            "valid",
            f"{info.not_before:%Y-%m-%d} to {info.not_after:%Y-%m-%d} ({left:.0f} days left)",
        ),
        ("sha256", info.fingerprint),
    )
    for label, value in rows:
        out.print(f"{label:8} {value}", markup=False)


@tls_app.command("set")
@handle_errors
def tls_set(
    cert: Annotated[
        Path, typer.Option("--cert", dir_okay=False, help="Certificate chain (PEM), leaf first.")
    ],
    key: Annotated[
        Path, typer.Option("--key", dir_okay=False, help="Its private key (PEM, unencrypted).")
    ],
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Install a certificate and key for this server, checked first (the key matches, the
    certificate is valid now); a running server uses it for new connections, no restart."""
    config = load_config(resolve_data_dir(data_dir))
    announce(config)
    info = install_certificate(config, cert, key)
    _show(info, as_json)
    if not as_json:
        out.print("installed: new connections use it (a running server needs no restart)")


@tls_app.command("show")
@handle_errors
def tls_show(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Show the installed certificate: names, issuer, validity, SHA-256 fingerprint."""
    config = load_config(resolve_data_dir(data_dir))
    announce(config)
    _show(describe(config), as_json)
