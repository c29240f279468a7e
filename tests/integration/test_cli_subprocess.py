"""The installed `sitemail` console script, run as a real process, as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sitemail.admin.service import AdminService

SITEMAIL = Path(sys.executable).with_name("sitemail")

pytestmark = pytest.mark.skipif(not SITEMAIL.exists(), reason="console script not installed")


def sitemail(*args: str | Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"SITEMAIL_DATA_DIR", "SITEMAIL_DEBUG"}}
    return subprocess.run(
        [str(SITEMAIL), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_cli_process_help_exits_zero() -> None:
    """`sitemail --help` lists the command groups and exits 0."""
    result = sitemail("--help")
    assert result.returncode == 0, result.stderr
    for group in ("init", "mailbox", "contact", "group", "addressing", "directory"):
        assert group in result.stdout


def test_cli_process_readme_walkthrough(tmp_path: Path) -> None:
    """The README's commands end to end: init, add with a password, dry run, re-address, show."""
    d = tmp_path / "sitea"
    pw = tmp_path / "pw.txt"
    pw.write_text("correct horse\n", encoding="utf-8")
    steps: list[tuple[str | Path, ...]] = [
        ("init", "--data-dir", d, "--org", "ExchangeORG", "--site", "SiteA", "--server",
         "ServerA", "--domain", "sitea.example.com", "--listen", "127.10.10.10"),
        ("mailbox", "add", "jsmith", "--name", "John Smith", "--given-name", "John",
         "--surname", "Smith", "--password-file", pw),
    ]  # fmt: skip
    for step in steps:
        result = sitemail(*step)
        assert result.returncode == 0, (step, result.stderr)
        assert "correct horse" not in result.stdout + result.stderr

    dry = sitemail("addressing", "set", "smtp", "@example.com", "--update-recipients", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "jsmith: jsmith@sitea.example.com -> jsmith@example.com" in dry.stdout
    assert "nothing was changed" in dry.stdout
    assert dry.stderr == f"sitemail: SiteA (server ServerA, data dir {d.resolve()})\n"

    real = sitemail("addressing", "set", "smtp", "@example.com", "--update-recipients")
    assert real.returncode == 0, real.stderr
    assert "1 recipient(s) re-addressed" in real.stdout

    data = json.loads(sitemail("mailbox", "show", "jsmith", "--json").stdout)
    assert data["primary_address"] == "jsmith@example.com"
    assert data["proxies"] == ["SMTP:jsmith@example.com", "smtp:jsmith@sitea.example.com"]


def test_cli_process_error_is_one_line_with_exit_code(tmp_path: Path) -> None:
    """A fault is one `error:` line on stderr and its sysexits code, with no traceback."""
    missing = sitemail("mailbox", "list", "--data-dir", tmp_path / "nowhere")
    assert missing.returncode == 78
    assert missing.stdout == ""
    assert missing.stderr.startswith("error: ")
    assert len(missing.stderr.splitlines()) == 1

    AdminService.init(
        tmp_path / "d", org="O", site="SiteA", server="S", domain="sitea.example.com",
        listen=["127.0.0.1"],
    ).close()  # fmt: skip
    unknown = sitemail("mailbox", "show", "nobody", "-D", tmp_path / "d")
    assert unknown.returncode == 66
    assert unknown.stderr == (
        f"sitemail: SiteA (server S, data dir {(tmp_path / 'd').resolve()})\n"
        "error: no recipient 'nobody' in the directory\n"
    )
    assert unknown.stdout == ""
