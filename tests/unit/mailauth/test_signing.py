"""DkimSigner: which messages it signs, and that the signatures verify, in memory or not."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import dkim

from sitemail.mailauth.dkimkeys import (
    activate_next,
    dkim_public_records,
    generate_dkim_keys,
    rotate,
)
from sitemail.mailauth.signing import ActiveKeys, DkimSigner
from sitemail.queue.content import Content, FileSource


def _signer(tmp_path: Path, max_size: int = 1 << 30) -> DkimSigner:
    return DkimSigner(ActiveKeys(tmp_path), lambda d: d == "example.com", max_size=max_size)


def _verifies(tmp_path: Path, message: bytes) -> list[bool]:
    records = {r.name: r.txt for r in dkim_public_records(tmp_path, ["example.com"])}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().rstrip("."), "").encode()

    verifier = dkim.DKIM(message)
    count = sum(1 for k, _ in verifier.headers if k.lower() == b"dkim-signature")
    return [bool(verifier.verify(i, dnsfunc=dnsfunc)) for i in range(count)]


def _message(sender: str, body: bytes = b"hello\r\n") -> bytes:
    return f"From: <{sender}>\r\nTo: <x@y.test>\r\nSubject: s\r\n\r\n".encode() + body


def test_signing_ours_signed_twice_and_verifies(tmp_path: Path) -> None:
    """Our From domain: an RSA and an Ed25519 signature, both verifying."""
    generate_dkim_keys(tmp_path, "SiteA")
    signed = asyncio.run(_signer(tmp_path).sign(Content.of(_message("a@example.com"))))
    assert _verifies(tmp_path, signed.whole()) == [True, True]


def test_signing_not_ours_or_too_big_unsigned(tmp_path: Path) -> None:
    """Another From domain, several From fields, or over max_size: unchanged."""
    generate_dkim_keys(tmp_path, "SiteA")
    signer = _signer(tmp_path, max_size=100)
    for message in (
        _message("a@other.test"),
        _message("a@example.com").replace(b"To:", b"From: <b@example.com>\r\nTo:"),
        _message("a@example.com", b"x" * 200),
    ):
        content = Content.of(message)
        assert asyncio.run(signer.sign(content)) is content


def test_signing_big_message_behind_a_file(tmp_path: Path) -> None:
    """A message behind its spool file (bare LF line ends) is signed as the wire carries it."""
    generate_dkim_keys(tmp_path, "SiteA")
    body = _message("a@example.com", b"line\n" * 300_000).replace(b"\r\n", b"\n")
    path = tmp_path / "spooled"
    path.write_bytes(body)
    content = Content.behind(FileSource(os.open(path, os.O_RDONLY)), len(body), body[:4096])
    signed = asyncio.run(_signer(tmp_path).sign(content))
    wire = signed.whole().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert _verifies(tmp_path, wire) == [True, True]


def test_signing_follows_activation(tmp_path: Path) -> None:
    """After `dkim rotate --activate` the running signer uses the new selector."""
    generate_dkim_keys(tmp_path, "SiteA")
    signer = _signer(tmp_path)
    first = asyncio.run(signer.sign(Content.of(_message("a@example.com")))).whole()
    assert b"s=sitea;" in first
    rotate(tmp_path)
    activate_next(tmp_path)
    second = asyncio.run(signer.sign(Content.of(_message("a@example.com")))).whole()
    assert b"s=sitea2;" in second
    assert _verifies(tmp_path, second) == [True, True]
