"""Which site a command acts on, over the installed `sitemail` run as real processes: the
context line, `use` / `where`, `init` leaving the default alone, the warning on a switch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SITEMAIL = Path(sys.executable).with_name("sitemail")

pytestmark = pytest.mark.skipif(not SITEMAIL.exists(), reason="console script not installed")


def sitemail(config_home: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """One command as a user types it, with this test's own per-user records."""
    env = {k: v for k, v in os.environ.items() if k not in {"SITEMAIL_DATA_DIR", "SITEMAIL_DEBUG"}}
    env["XDG_CONFIG_HOME"] = str(config_home)
    return subprocess.run(
        [str(SITEMAIL), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def init(config_home: Path, data_dir: Path, site: str, server: str) -> str:
    """`sitemail init` of one site on 127.37.0.x; its stderr."""
    done = sitemail(
        config_home, "init", "-D", data_dir, "--org", "ExchangeORG", "--site", site,
        "--server", server, "--domain", f"{site.lower()}.example.com", "--listen", "127.37.0.1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stderr


def line(site: str, server: str, data_dir: Path) -> str:
    return f"sitemail: {site} (server {server}, data dir {data_dir.resolve()})"


def test_context_line_names_site_server_and_data_dir(tmp_path: Path) -> None:
    """Every command on a site says on stderr which site, server and data dir it used, also
    with --json (whose stdout stays JSON alone)."""
    home, a = tmp_path / "xdg", tmp_path / "a"
    init(home, a, "SiteA", "ServerA1")
    listed = sitemail(home, "mailbox", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert listed.stderr.splitlines() == [line("SiteA", "ServerA1", a)]
    routed = sitemail(home, "routing", "table", "-D", a)
    assert routed.stderr.splitlines()[0] == line("SiteA", "ServerA1", a)


def test_context_init_keeps_the_default_and_use_moves_it(tmp_path: Path) -> None:
    """A second `init` says that the default stays where it was; `use` moves it, `where`
    shows it and what chose it."""
    home, a, b = tmp_path / "xdg", tmp_path / "a", tmp_path / "b"
    assert f"now act on {a.resolve()}" in init(home, a, "SiteA", "ServerA")
    said = init(home, b, "SiteA", "ServerA")
    assert f"note: commands without --data-dir still act on {a.resolve()}" in said
    assert f"`sitemail use {b.resolve()}`" in said
    where = json.loads(sitemail(home, "where", "--json").stdout)
    assert where == {
        "site": "SiteA",
        "server": "ServerA",
        "data_dir": str(a.resolve()),
        "chosen_by": "sitemail use",
    }
    used = sitemail(home, "use", b)
    assert used.returncode == 0, used.stderr
    assert f"now act on SiteA (server ServerA, data dir {b.resolve()})" in used.stdout
    shown = sitemail(home, "where")
    assert shown.stdout.strip() == f"{line('SiteA', 'ServerA', b)}, chosen by sitemail use"
    explicit = json.loads(sitemail(home, "where", "-D", a, "--json").stdout)
    assert explicit["chosen_by"] == "--data-dir"


def test_context_switch_to_another_site_warns_naming_both(tmp_path: Path) -> None:
    """A command on another site than the previous command's warns, naming both (also
    another site of the same name); the next command on the same site is quiet again."""
    home, a, b, c = tmp_path / "xdg", tmp_path / "a", tmp_path / "b", tmp_path / "c"
    init(home, a, "SiteA", "ServerA")
    init(home, b, "SiteA", "ServerA")  # the case: another SiteA
    init(home, c, "SiteC", "ServerC")
    first = sitemail(home, "mailbox", "list")  # the default: a, after init of c
    warning = first.stderr.splitlines()[1]
    assert warning.startswith("warning: this command acted on SiteA (server ServerA")
    assert f"previous one acted on SiteC (server ServerC, data dir {c.resolve()})" in warning
    same_name = sitemail(home, "mailbox", "list", "-D", b)
    warning = same_name.stderr.splitlines()[1]
    assert f"acted on another site named SiteA (server ServerA, data dir {b.resolve()})" in (
        warning
    )
    assert f"previous one acted on SiteA (server ServerA, data dir {a.resolve()})" in warning
    again = sitemail(home, "mailbox", "list", "-D", b)
    assert again.stderr.splitlines() == [line("SiteA", "ServerA", b)]


def test_context_where_and_use_refuse_what_is_no_data_dir(tmp_path: Path) -> None:
    """`where` with no default and `use` of a folder that is no data dir exit 78, one line."""
    home = tmp_path / "xdg"
    nothing = sitemail(home, "where")
    assert nothing.returncode == 78
    assert nothing.stderr.startswith("error: no data dir given")
    wrong = sitemail(home, "use", tmp_path)
    assert wrong.returncode == 78
    assert wrong.stderr.splitlines() == [wrong.stderr.strip()]
    assert "not a sitemail data dir" in wrong.stderr or "not found" in wrong.stderr
    assert not (home / "sitemail" / "current").exists()


def test_context_default_that_is_gone_says_where_it_was_recorded(tmp_path: Path) -> None:
    """A default data dir deleted since: exit 78, naming it and the record, not a bare
    "sitemail.toml not found"."""
    home, a = tmp_path / "xdg", tmp_path / "a"
    init(home, a, "SiteA", "ServerA")
    (a / "sitemail.toml").unlink()
    gone = sitemail(home, "mailbox", "list")
    assert gone.returncode == 78
    assert gone.stderr.strip() == (
        f"error: the default data dir {a.resolve()} (recorded in "
        f"{home / 'sitemail' / 'current'}) is not a sitemail data dir any more: choose one "
        "with `sitemail use DIR` or --data-dir"
    )
