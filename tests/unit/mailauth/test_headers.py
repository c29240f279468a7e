"""Header fields: From domains, and fields removed from messages in memory or behind a file."""

from __future__ import annotations

import os
from pathlib import Path

from sitemail.mailauth.headers import from_domain, from_domains, is_quarantined, without_fields
from sitemail.queue.content import Content, FileSource

MESSAGE = (
    b"Authentication-Results: us; dmarc=pass\r\n"
    b"From: A <a@Example.COM>\r\n"
    b"X-Sitemail-Quarantine: us; x\r\n"
    b"Subject: folded\r\n the subject\r\n"
    b"\r\n"
    b"Authentication-Results: us; in the body stays\r\n"
)


def _drop(name: str, value: str) -> bool:
    return name in ("authentication-results", "x-sitemail-quarantine")


def test_headers_from_domains() -> None:
    """One From with one address gives the domain; several give none for DMARC."""
    assert from_domain(MESSAGE) == "example.com"
    two = b"From: a@x.test, b@y.test\r\n\r\n"
    assert from_domain(two) is None
    assert from_domains(two) == ["x.test", "y.test"]
    assert from_domain(b"From: a@x.test\r\nFrom: b@y.test\r\n\r\n") is None
    assert is_quarantined(MESSAGE)


def test_headers_without_fields_in_memory() -> None:
    """Fields are removed from the header section only; the prefix and body stay."""
    content = Content.of(MESSAGE).with_prefix(b"Received: by us\r\n")
    out = without_fields(content, _drop)
    assert out.whole() == (
        b"Received: by us\r\nFrom: A <a@Example.COM>\r\nSubject: folded\r\n the subject\r\n"
        b"\r\nAuthentication-Results: us; in the body stays\r\n"
    )
    assert without_fields(out, _drop) is out


def test_headers_without_fields_behind_a_file(tmp_path: Path) -> None:
    """A big message keeps its body in the file: only the header section is rebuilt."""
    body = MESSAGE + b"x" * 300_000 + b"\r\n"
    path = tmp_path / "spooled"
    path.write_bytes(body)
    fd = os.open(path, os.O_RDONLY)
    content = Content.behind(FileSource(fd), len(body), body[:4096])
    out = without_fields(content, _drop)
    expected = without_fields(Content.of(body), _drop).whole()
    assert out.size == len(expected)
    assert b"".join(out.chunks(1000)) == expected
    assert not is_quarantined(out.head)
