"""The submission policy's reading of From and Sender (smtp.submission.header_refusal)."""

from __future__ import annotations

import pytest

from sitemail.smtp.submission import header_refusal

OWN = frozenset({"jsmith@sitea.test", "jörg@sitea.test"})


def verdict(header: bytes) -> str:
    reply = header_refusal(header + b"Subject: s\r\n\r\nbody\r\n", OWN)
    return "ok" if reply is None else f"{reply.code} {reply.enhanced}"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"From: jsmith@sitea.test\r\n", "ok"),
        (b"From: John <JSmith@SiteA.test>\r\nSender: jsmith@sitea.test\r\n", "ok"),
        (b"From: =?utf-8?q?J=C3=B6rg?= <j\xc3\xb6rg@sitea.test>\r\n", "ok"),  # RFC 6532
        (b"From:\r\n John\r\n <jsmith@sitea.test>\r\n", "ok"),  # folded
        (b"From: other@sitea.test\r\n", "550 5.7.1"),
        (b"From: jsmith@sitea.test, other@sitea.test\r\n", "550 5.7.1"),
        (b"From: jsmith@sitea.test\r\nSender: other@sitea.test\r\n", "550 5.7.1"),
        (b'From: "other@sitea.test" <jsmith@sitea.test>\r\n', "ok"),  # a name, not an address
        (b"From: =?utf-8?q?other@sitea.test?= <jsmith@sitea.test>\r\n", "550 5.7.1"),
        (b"From: J\xf6rg <jsmith@sitea.test>\r\n", "550 5.6.0"),  # not UTF-8
        (b"From: undisclosed:;\r\n", "550 5.6.0"),  # no address
        (b"From: jsmith@sitea.test <other@sitea.test>\r\n", "550 5.6.0"),
        (b"From: " + b"a" * 5000 + b"@sitea.test\r\n", "550 5.6.0"),
        (b"Subject: no from\r\n", "550 5.6.0"),
    ],
)
def test_header_refusal_reads_from_and_sender_strictly(header: bytes, expected: str) -> None:
    """Own addresses pass (any case, UTF-8, folded); others are 5.7.1; what cannot be read
    the same way by both address parsers is 5.6.0."""
    assert verdict(header) == expected
