"""DKIM keys: made per site, 0600, published as records dkimpy verifies, rotated in steps."""

from __future__ import annotations

import stat
from pathlib import Path

import dkim
import pytest

from sitemail.core.errors import ConflictError
from sitemail.mailauth.dkimkeys import (
    activate_next,
    dkim_key_files,
    dkim_public_records,
    generate_dkim_keys,
    load_signing_keys,
    rotate,
    selector_base,
)

MESSAGE = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nhello\r\n"


def _verify(message: bytes, records: dict[str, str]) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().rstrip("."), "").encode()

    return bool(dkim.verify(message, dnsfunc=dnsfunc))


def test_selector_base_from_site_name() -> None:
    """The selector stem is the site name in lowercase, without other characters."""
    assert selector_base("SiteA") == "sitea"
    assert selector_base("Paris Office_2") == "parisoffice2"
    assert selector_base("__") == "sitemail"


def test_generate_keys_private_and_published(tmp_path: Path) -> None:
    """init's keys are 0600 files; each domain gets an RSA and an Ed25519 record."""
    generate_dkim_keys(tmp_path, "SiteA")
    files = dkim_key_files(tmp_path)
    assert len(files) == 2
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    records = dkim_public_records(tmp_path, ["example.com", "Example.ORG."])
    assert [(r.name, r.txt.split(";")[1].strip()) for r in records] == [
        ("sitea._domainkey.example.com", "k=rsa"),
        ("sitea-ed25519._domainkey.example.com", "k=ed25519"),
        ("sitea._domainkey.example.org", "k=rsa"),
        ("sitea-ed25519._domainkey.example.org", "k=ed25519"),
    ]
    assert all(r.txt.startswith("v=DKIM1; ") for r in records)


def test_signing_keys_verify_against_records(tmp_path: Path) -> None:
    """A signature made with each active key verifies with dkimpy against its record."""
    generate_dkim_keys(tmp_path, "SiteA")
    records = {r.name: r.txt for r in dkim_public_records(tmp_path, ["example.com"])}
    for key in load_signing_keys(tmp_path):
        header = dkim.sign(
            MESSAGE,
            key.selector.encode(),
            b"example.com",
            key.private,
            signature_algorithm=key.algorithm.encode(),
        )
        assert _verify(header + MESSAGE, records), key.algorithm
        assert not _verify(header + MESSAGE.replace(b"hello", b"hullo"), records)


def test_rotate_publishes_before_signing(tmp_path: Path) -> None:
    """rotate pre-publishes sitea2; activate signs with it and keeps sitea published once."""
    generate_dkim_keys(tmp_path, "SiteA")
    state = rotate(tmp_path)
    assert (state.active, state.next) == ("sitea", "sitea2")
    assert load_signing_keys(tmp_path)[0].selector == "sitea"
    selectors = {r.selector for r in dkim_public_records(tmp_path, ["example.com"])}
    assert selectors == {"sitea", "sitea-ed25519", "sitea2", "sitea2-ed25519"}
    with pytest.raises(ConflictError):
        rotate(tmp_path)
    state = activate_next(tmp_path)
    assert (state.active, state.next, state.previous) == ("sitea2", None, "sitea")
    assert load_signing_keys(tmp_path)[0].selector == "sitea2"
    rotate(tmp_path)
    state = activate_next(tmp_path)
    assert (state.active, state.previous) == ("sitea3", "sitea2")
    assert len(dkim_key_files(tmp_path)) == 4  # sitea's keys are gone: out of DNS
    with pytest.raises(ConflictError):
        activate_next(tmp_path)


def test_no_keys_no_records(tmp_path: Path) -> None:
    """A data dir made before DKIM has no records and no signing keys (not an error)."""
    assert dkim_public_records(tmp_path, ["example.com"]) == []
    assert load_signing_keys(tmp_path) == ()
