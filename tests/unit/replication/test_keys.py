"""Site keys: generation at init, the printed token, fingerprints, signatures."""

from __future__ import annotations

from pathlib import Path

import pytest

from sitemail.admin.service import AdminService
from sitemail.core.errors import ConfigError, InvalidValueError
from sitemail.replication import fingerprint, generate_site_key, load_site_key, parse_public_key


def test_site_key_made_at_init_and_published_in_site_object(site_a: AdminService) -> None:
    """init writes a 0600 private key and puts the public token in the replicated site object."""
    token, print_ = site_a.site_key()
    path = site_a.config.data_dir / "keys" / "site-ed25519.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    assert site_a.directory.site_object().attrs["public_key"] == token
    assert print_ == fingerprint(token)
    assert print_.startswith("SHA256:")


def test_site_key_token_round_trips_and_verifies(tmp_path: Path) -> None:
    """The printed token is what --peer-key parses; it verifies the site's signatures only."""
    key = generate_site_key(tmp_path)
    peer = parse_public_key(key.public.token)
    signature = key.sign(b"payload")
    assert peer.verify(signature, b"payload")
    assert not peer.verify(signature, b"payload!")
    other = generate_site_key(tmp_path / "other")
    assert not other.public.verify(signature, b"payload")
    assert load_site_key(tmp_path).public.token == key.public.token


@pytest.mark.parametrize(
    "token",
    ["", "ssh-ed25519 AAAA", "ed25519:not base64!", "ed25519:" + "QQ==", "ed25519:" + "A" * 60],
)
def test_site_key_bad_tokens_are_refused(token: str) -> None:
    """Anything but ed25519:<32 bytes base64> is an InvalidValueError, never a crash."""
    with pytest.raises(InvalidValueError):
        parse_public_key(token)


def test_site_key_is_never_overwritten(tmp_path: Path) -> None:
    """A second generation in the same data dir is refused: keys are not replaced silently."""
    generate_site_key(tmp_path)
    with pytest.raises(ConfigError):
        generate_site_key(tmp_path)


def test_site_key_missing_or_garbage_is_a_config_error(tmp_path: Path) -> None:
    """A data dir without a usable key says so."""
    with pytest.raises(ConfigError):
        load_site_key(tmp_path)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "site-ed25519.pem").write_text("garbage")
    with pytest.raises(ConfigError):
        load_site_key(tmp_path)
