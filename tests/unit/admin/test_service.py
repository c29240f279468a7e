"""AdminService: creating and opening data dirs, passwords, and the checks front ends rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

from sitemail.admin.service import AdminService, read_password_file
from sitemail.config import CONFIG_FILE
from sitemail.core import (
    ConfigError,
    ConflictError,
    InvalidAddressError,
    InvalidValueError,
    NotFoundError,
)
from sitemail.directory import ObjectKind, RecipientChanges, verify_password
from sitemail.site import SiteServer

INIT = {
    "org": "ExchangeORG",
    "site": "SiteA",
    "server": "ServerA",
    "domain": "sitea.example.com",
    "listen": ["127.0.0.1"],
}


def test_admin_init_creates_config_database_and_certificate(site_a: AdminService) -> None:
    """A new data dir holds sitemail.toml, the SQLite database and a TLS key pair."""
    data_dir = site_a.config.data_dir
    assert (data_dir / CONFIG_FILE).is_file()
    assert (data_dir / "sitemail.db").is_file()
    assert site_a.config.path(site_a.config.tls.cert_file).is_file()
    assert site_a.config.path(site_a.config.tls.key_file).is_file()
    assert (site_a.config.site, site_a.config.server) == ("SiteA", "ServerA")
    assert site_a.addressing() == "%m@sitea.example.com"


def test_admin_open_sees_what_init_wrote(site_a: AdminService) -> None:
    """Reopening the data dir (as every CLI command does) finds the same directory."""
    site_a.add_recipient(ObjectKind.MAILBOX, "jsmith", display_name="J")
    again = AdminService.open(site_a.config.data_dir)
    try:
        assert again.org() == site_a.org()
        assert [r.alias for r in again.list_recipients(None)] == ["jsmith"]
    finally:
        again.close()


def test_admin_init_twice_is_a_conflict(site_a: AdminService) -> None:
    """`init` on an existing data dir is ConflictError (exit 73) and leaves it alone."""
    with pytest.raises(ConflictError):
        AdminService.init(site_a.config.data_dir, **INIT)  # type: ignore[arg-type]
    assert site_a.addressing() == "%m@sitea.example.com"


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"org": "Exchange ORG"}, InvalidValueError),
        ({"site": ""}, InvalidValueError),
        ({"server": "a/b"}, InvalidValueError),
        ({"domain": "bad_domain"}, InvalidAddressError),
        ({"listen": ["not-an-ip"]}, ConfigError),
    ],
)
def test_admin_init_with_bad_values_leaves_no_data_dir(
    tmp_path: Path, changes: dict[str, object], error: type[Exception]
) -> None:
    """A refused init leaves no sitemail.toml behind, so it can simply be run again."""
    with pytest.raises(error):
        AdminService.init(tmp_path / "d", **(INIT | changes))  # type: ignore[arg-type]
    assert not (tmp_path / "d" / CONFIG_FILE).exists()


def test_admin_open_missing_data_dir_is_config_error(tmp_path: Path) -> None:
    """Opening a directory that is not a data dir is ConfigError (exit 78)."""
    with pytest.raises(ConfigError):
        AdminService.open(tmp_path / "missing")


def test_admin_password_is_stored_as_a_hash_only(site_a: AdminService) -> None:
    """A mailbox password is kept as a verifiable scrypt hash, never in the object itself."""
    r = site_a.add_recipient(ObjectKind.MAILBOX, "jsmith", display_name="J", password="pa55word")
    stored = site_a.directory.password_hash(r.guid)
    assert stored is not None
    assert stored.startswith("$scrypt$")
    assert verify_password("pa55word", stored)
    assert "pa55word" not in repr(site_a.get_recipient("jsmith"))


def test_admin_password_change_replaces_the_hash(site_a: AdminService) -> None:
    """Setting a new password replaces the old hash."""
    r = site_a.add_recipient(ObjectKind.MAILBOX, "jsmith", display_name="J")
    assert site_a.directory.password_hash(r.guid) is None
    site_a.update_recipient("jsmith", RecipientChanges(), ObjectKind.MAILBOX, password="n3w")
    stored = site_a.directory.password_hash(r.guid)
    assert stored is not None
    assert verify_password("n3w", stored)


def test_admin_name_of_maps_guid_to_alias(site_a: AdminService) -> None:
    """name_of shows a guid as its alias, or the guid itself when it names nothing."""
    r = site_a.add_recipient(ObjectKind.MAILBOX, "jsmith", display_name="J")
    assert site_a.name_of(r.guid) == "jsmith"
    assert site_a.name_of("no-such-guid") == "no-such-guid"


# -- password files ---------------------------------------------------------------------------------


def test_password_file_first_line_is_the_password(tmp_path: Path) -> None:
    """Only the first line counts, without its line ending; spaces inside are kept."""
    path = tmp_path / "pw"
    path.write_text("two words\r\nsecond line\n", encoding="utf-8")
    assert read_password_file(path) == "two words"


def test_password_file_dash_reads_stdin(tmp_path: Path) -> None:
    """`-` reads the password from standard input."""
    assert read_password_file(Path("-"), lambda: "from-stdin\n") == "from-stdin"


@pytest.mark.parametrize("content", ["", "\n", "\nsecond"])
def test_password_file_empty_is_refused(tmp_path: Path, content: str) -> None:
    """An empty first line is InvalidValueError (exit 65): no mailbox with an empty password."""
    path = tmp_path / "pw"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidValueError, match="empty"):
        read_password_file(path)


def test_password_file_missing_is_not_found(tmp_path: Path) -> None:
    """A password file that cannot be read is EX_NOINPUT (66), naming the file."""
    with pytest.raises(NotFoundError, match="pw-missing") as caught:
        read_password_file(tmp_path / "pw-missing")
    assert caught.value.exit_code == 66


def test_password_file_not_utf8_is_refused(tmp_path: Path) -> None:
    """A password file that is not UTF-8 text is InvalidValueError, not a crash."""
    path = tmp_path / "pw"
    path.write_bytes(b"\xff\xfe\xfa\n")
    with pytest.raises(InvalidValueError):
        read_password_file(path)


def test_server_keeps_its_site_domain_name_when_addressing_moves_to_the_shared_domain(
    site_a: AdminService,
) -> None:
    """Greetings, Received headers and login referrals say servera.sitea.example.com (the
    article's A record), before and after Site Addressing changes to @example.com."""
    server = SiteServer(site_a.config)
    assert server.server_name(site_a.directory) == "servera.sitea.example.com"
    site_a.set_addressing("smtp", "@example.com", update_recipients=False)
    assert server.server_name(site_a.directory) == "servera.sitea.example.com"
