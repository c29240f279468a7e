"""Run `sitemail serve` once as a separate process, for tests of how it fails to start."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

from sitemail.admin.service import AdminService


def serve_command(data_dir: Path) -> list[str]:
    """`sitemail serve -D data_dir` with this interpreter (no console script needed)."""
    return [
        sys.executable,
        "-c",
        "from sitemail.main import main; main()",
        "serve",
        "-D",
        str(data_dir),
    ]


def user_python(folder: Path) -> Path:
    """An interpreter any user can run, with this one's packages: a virtualenv of the
    system's python3 in `folder` (this interpreter may live in root's home, closed to others)."""
    venv = folder / "python"
    subprocess.run(
        ["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    packages = sysconfig.get_paths()["purelib"]
    site_dir = next((venv / "lib").glob("python3*/site-packages"))
    (site_dir / "sitemail-tests.pth").write_text(f"import site; site.addsitedir({packages!r})\n")
    return venv / "bin" / "python"


def serve_until_it_exits(data_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`sitemail serve -D data_dir` with this interpreter; its exit status and output (for a
    configuration it must refuse: it would otherwise run until `timeout`)."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from sitemail.main import main; main()",
            "serve",
            "-D",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def relaying_site(data_dir: Path, listen: str, domain: str, nexthop: str) -> None:
    """`sitemail init` of SiteA in `data_dir` on `listen`, forwarding all mail for `domain` to
    `nexthop` ("host:port") by a domain route."""
    service = AdminService.init(
        data_dir,
        org="ExchangeORG",
        site="SiteA",
        server="ServerA",
        domain="sitea.example.com",
        listen=[listen],
    )
    try:
        service.add_domain_route(domain, nexthop)
    finally:
        service.close()


def smtp_and_imaps_only(data_dir: Path, smtp: int, imaps: int) -> None:
    """Listeners: SMTP on port `smtp`, IMAP over TLS on `imaps`, nothing else (no admin API,
    POP3, submission or plain IMAP)."""
    configure(
        data_dir,
        {
            "smtp": f"port = {smtp}",
            "imap": f"port = 0\ntls_port = {imaps}",
            "admin": "port = 0",
            "pop3": "port = 0\ntls_port = 0",
            "submission": "port = 0\ntls_port = 0",
        },
    )


def configure(data_dir: Path, tables: dict[str, str]) -> None:
    """Add settings at the top of tables of data_dir's sitemail.toml (ports, mostly)."""
    path = data_dir / "sitemail.toml"
    text = path.read_text()
    for table, settings in tables.items():
        text = text.replace(f"\n[{table}]\n", f"\n[{table}]\n{settings}\n", 1)
    path.write_text(text)
