"""`sitemail tls set`'s checks, the self-signed default's lifetime, and where the admin port
listens by default."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from tests.support.certs import make_pair

from sitemail.admin.service import AdminService
from sitemail.admin.tls import SELF_SIGNED_DAYS, describe, install_certificate
from sitemail.admin.token import admin_address, admin_url, check_admin_exposure
from sitemail.core.errors import ConfigError, InvalidValueError

NOW = dt.datetime.now(dt.UTC)


def pair(
    directory: Path, *, days: int = 90, starts: int = -1, name: str = "mail.example.com"
) -> tuple[Path, Path]:
    made = make_pair(directory, name, days=days, starts=starts)
    return made.cert, made.key


def test_tls_self_signed_default_lasts_one_year(site_a: AdminService) -> None:
    """`init`'s certificate is self-signed and valid for SELF_SIGNED_DAYS (365), not 10 years."""
    info = describe(site_a.config)
    assert info.self_signed
    assert SELF_SIGNED_DAYS == 365
    assert 364 <= info.days_left(NOW) <= 366


def test_tls_set_installs_a_matching_pair(site_a: AdminService, tmp_path: Path) -> None:
    """A valid pair is installed at [tls] cert_file / key_file; the key file is 0600."""
    cert, key = pair(tmp_path)
    info = install_certificate(site_a.config, cert, key)
    assert describe(site_a.config) == info
    assert info.subject == "CN=mail.example.com"
    key_file = site_a.config.path(site_a.config.tls.key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("mismatch", "does not match the certificate"),
        ("expired", "expired on"),
        ("future", "not valid before"),
        ("key as cert", "holds no PEM certificate"),
        ("cert as key", "holds no PEM private key"),
        ("encrypted", "is encrypted"),
        ("missing", "cannot read the certificate file"),
    ],
)
def test_tls_set_refuses_a_bad_pair_with_a_clear_error(
    site_a: AdminService, tmp_path: Path, case: str, message: str
) -> None:
    """Each bad pair is refused with a message saying what is wrong; nothing is installed."""
    before = describe(site_a.config)
    cert, key = pair(tmp_path)
    if case == "mismatch":
        _, key = pair(tmp_path, name="other.example.com")
    elif case == "expired":
        cert, key = pair(tmp_path, days=-1, starts=-30)
    elif case == "future":
        cert, key = pair(tmp_path, starts=2)
    elif case == "key as cert":
        cert = key
    elif case == "cert as key":
        key = cert
    elif case == "encrypted":
        loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
        key.write_bytes(
            loaded.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
    elif case == "missing":
        cert = tmp_path / "nothing.pem"
    with pytest.raises(InvalidValueError, match=message):
        install_certificate(site_a.config, cert, key)
    assert describe(site_a.config) == before


def test_admin_listens_on_loopback_by_default(site_a: AdminService) -> None:
    """Without [admin] listen the admin port is on loopback: the server's own address when it
    is a loopback one (the lab), else 127.0.0.1 (::1 for IPv6); off loopback TLS is required."""
    config = site_a.config
    assert admin_address(dataclasses.replace(config, listen=("127.27.0.40",)))[0] == "127.27.0.40"
    public = dataclasses.replace(config, listen=("192.0.2.25",))
    assert admin_address(public)[0] == "127.0.0.1"
    assert admin_address(dataclasses.replace(config, listen=("2001:db8::25",)))[0] == "::1"
    check_admin_exposure(public)
    exposed = dataclasses.replace(public, admin=dataclasses.replace(config.admin, listen="0.0.0.0"))
    with pytest.raises(ConfigError, match=r"\[admin\] tls = true"):
        check_admin_exposure(exposed)
    secured = dataclasses.replace(exposed, admin=dataclasses.replace(exposed.admin, tls=True))
    check_admin_exposure(secured)
    assert admin_url(secured).startswith("https://0.0.0.0:")
