"""The SMTP engine's pure helpers: xtext, paths, MAIL/RCPT parameters, Received, limiter."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import cast

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given
from hypothesis import strategies as st

from sitemail.config.model import LimitsConfig
from sitemail.core.clock import SystemClock
from sitemail.core.envelope import BodyType, EnvelopeRecipient, Notify, Ret
from sitemail.core.reply import Reply
from sitemail.smtp.engine import (
    ConnectionLimiter,
    MailParams,
    SmtpPolicy,
    SmtpSession,
    _Settings,
    decode_xtext,
    encode_xtext,
    parse_mail_params,
    parse_rcpt_params,
    received_header,
    split_path,
)

LIMIT = 10_000


# -- xtext (RFC 3461 section 4) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("", ""),
        ("plain", "plain"),
        ("a+2Bb", "a+b"),
        ("a+3Db", "a=b"),
        ("sp+20ace", "sp ace"),
        ("lower+2bhex", "lower+hex"),
        ("+C3+A9t+C3+A9", "été"),
    ],
)
def test_xtext_decode_known_values(encoded: str, decoded: str) -> None:
    """xtext decodes "+XX" octets (UTF-8) and passes other characters through."""
    assert decode_xtext(encoded) == decoded


@pytest.mark.parametrize("bad", ["a+", "a+4", "a+zz", "a=b", "sp ace", "tab\t", "é", "+FF"])
def test_xtext_decode_refuses_malformed(bad: str) -> None:
    """A dangling "+", non-hex, "=", space, non-ASCII or non-UTF-8 octets are malformed."""
    with pytest.raises(ValueError, match="xtext"):
        decode_xtext(bad)


def test_xtext_encode_escapes_specials() -> None:
    """ "+", "=", space, controls and non-ASCII are encoded; other printable ASCII is kept."""
    assert encode_xtext("a+b=c d\r\né") == "a+2Bb+3Dc+20d+0D+0A+C3+A9"


@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_xtext_roundtrip(text: str) -> None:
    """decode(encode(t)) == t for any text."""
    assert decode_xtext(encode_xtext(text)) == text


# -- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("<a@b.example>", ("a@b.example", [])),
        (" <a@b.example> SIZE=10 BODY=8BITMIME", ("a@b.example", ["SIZE=10", "BODY=8BITMIME"])),
        ("<>", ("", [])),
        ('<"odd > name"@b.example> RET=HDRS', ('"odd > name"@b.example', ["RET=HDRS"])),
        ("a@b.example SIZE=10", ("a@b.example", ["SIZE=10"])),
        ("<a@b.example", None),
        ("<a@b.example>SIZE=10", None),
        ("", None),
    ],
)
def test_split_path_separates_address_and_parameters(
    arg: str, expected: tuple[str, list[str]] | None
) -> None:
    """Angle-bracketed paths (quotes respected) or a bare first word, then the parameters."""
    assert split_path(arg) == expected


# -- MAIL and RCPT parameters -------------------------------------------------------------------


def test_mail_params_parse_all_known() -> None:
    """SIZE, BODY, SMTPUTF8, RET and ENVID parse case-insensitively; ENVID keeps its case."""
    parsed = parse_mail_params(
        ["size=100", "BODY=8bitmime", "SmtpUtf8", "RET=full", "ENVID=Ab+2Bc", "AUTH=<>"],
        size_limit=LIMIT,
    )
    assert parsed == MailParams(
        size=100, body=BodyType.EIGHT_BIT, smtputf8=True, ret=Ret.FULL, envid="Ab+c"
    )


def test_mail_params_default_when_none_given() -> None:
    """No parameters: 7BIT, no RET, no ENVID."""
    assert parse_mail_params([], size_limit=LIMIT) == MailParams()


@pytest.mark.parametrize(
    ("params", "code", "enhanced"),
    [
        (["SIZE=10001"], 552, "5.3.4"),
        (["SIZE=-1"], 501, "5.5.4"),
        (["SIZE"], 501, "5.5.4"),
        (["BODY=BINARYMIME"], 501, "5.5.4"),
        (["RET=NONE"], 501, "5.5.4"),
        (["ENVID=a+0Ab"], 501, "5.5.4"),
        (["ENVID=+C3+A9"], 501, "5.5.4"),  # decoded ENVID must be ASCII
        (["RET=FULL", "ret=HDRS"], 501, "5.5.4"),
        (["=x"], 501, "5.5.4"),
        (["XYZ=1"], 555, "5.5.4"),
    ],
)
def test_mail_params_refuse_invalid(params: list[str], code: int, enhanced: str) -> None:
    """Invalid values are 501 5.5.4, too big a SIZE 552 5.3.4, unknown keywords 555 5.5.4."""
    parsed = parse_mail_params(params, size_limit=LIMIT)
    assert isinstance(parsed, Reply)
    assert (parsed.code, parsed.enhanced) == (code, enhanced)


def test_rcpt_params_parse_notify_and_orcpt() -> None:
    """NOTIFY is a set; ORCPT keeps its addr-type and address case, xtext-decoded."""
    parsed = parse_rcpt_params(
        "bob@b.example", ["notify=delay,Failure", "ORCPT=RFC822;Bob+2BX@B.Example"]
    )
    assert parsed == EnvelopeRecipient(
        "bob@b.example", frozenset({Notify.DELAY, Notify.FAILURE}), "RFC822;Bob+X@B.Example"
    )


def test_rcpt_params_utf8_orcpt_decodes_unicode_escapes() -> None:
    """ORCPT=utf-8;... (RFC 6533) takes \\x{HEX} escapes and raw UTF-8."""
    parsed = parse_rcpt_params("z@b.example", ["ORCPT=utf-8;zo\\x{EB}@b.example"])
    assert isinstance(parsed, EnvelopeRecipient)
    assert parsed.orcpt == "utf-8;zoë@b.example"
    raw = parse_rcpt_params("z@b.example", ["ORCPT=utf-8;zoë@b.example"])
    assert isinstance(raw, EnvelopeRecipient)
    assert raw.orcpt == "utf-8;zoë@b.example"


@pytest.mark.parametrize(
    "params",
    [
        ["NOTIFY=NEVER,DELAY"],
        ["NOTIFY=SUCCESS,SUCCESS"],
        ["NOTIFY=ALWAYS"],
        ["NOTIFY"],
        ["ORCPT=b@b.example"],
        ["ORCPT=;b@b.example"],
        ["ORCPT=rfc822;"],
        ["ORCPT=rfc822;b+0D+0A@b.example"],
        ["ORCPT=rfc 822;b"],
        ["ORCPT=rfc822;" + "b" * 501],
    ],
)
def test_rcpt_params_refuse_invalid(params: list[str]) -> None:
    """Bad NOTIFY lists and malformed ORCPT values are 501 5.5.4."""
    parsed = parse_rcpt_params("bob@b.example", params)
    assert isinstance(parsed, Reply)
    assert (parsed.code, parsed.enhanced) == (501, "5.5.4")


# -- Received ----------------------------------------------------------------------------------

WHEN = dt.datetime(2026, 11, 25, 9, 30, 0, tzinfo=dt.UTC)


def test_received_header_single_recipient_layout() -> None:
    """RFC 5321 4.4 layout, folded with tabs: from, by, with, id, for, date."""
    header = received_header(
        helo="client.example",
        peer_ip="127.0.0.5",
        server_name="mx.example",
        protocol="ESMTPS",
        queue_id="Q1",
        recipients=["bob@b.example"],
        when=WHEN,
        tls="using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits)",
    )
    assert header == (
        b"Received: from client.example ([127.0.0.5])\r\n"
        b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits))\r\n"
        b"\tby mx.example with ESMTPS id Q1\r\n"
        b"\tfor <bob@b.example>; Wed, 25 Nov 2026 09:30:00 +0000\r\n"
    )


def test_received_header_hides_recipients_and_sanitises_helo() -> None:
    """Several recipients are not named; HELO text cannot break out of the header's syntax."""
    header = received_header(
        helo="evil (x); y\\",
        peer_ip="::1",
        server_name="mx.example",
        protocol="ESMTP",
        queue_id="Q2",
        recipients=["a@b.example", "c@d.example"],
        when=WHEN,
    )
    assert header == (
        b"Received: from evil??x???y? ([IPv6:::1])\r\n"
        b"\tby mx.example with ESMTP id Q2;\r\n"
        b"\tWed, 25 Nov 2026 09:30:00 +0000\r\n"
    )


# -- connection accounting ------------------------------------------------------------------


def test_connection_limiter_counts_per_client_and_total() -> None:
    """Per-address and total limits refuse with 421 4.7.0; release frees the slot."""
    limiter = ConnectionLimiter(per_client=2, total=3)
    assert limiter.acquire("127.0.0.1") is None
    assert limiter.acquire("127.0.0.1") is None
    refused = limiter.acquire("127.0.0.1")
    assert refused is not None
    assert (refused.code, refused.enhanced) == (421, "4.7.0")
    assert limiter.acquire("127.0.0.2") is None
    full = limiter.acquire("127.0.0.3")
    assert full is not None
    assert full.code == 421
    limiter.release("127.0.0.1")
    assert limiter.acquire("127.0.0.3") is None
    assert limiter.total == 3


# -- the aiosmtpd seam ------------------------------------------------------------------------


def test_session_sets_every_attribute_aiosmtpd_init_sets() -> None:
    """SmtpSession skips SMTP.__init__ (slow); it must still set all of that state."""

    async def build() -> tuple[set[str], set[str]]:
        loop = asyncio.get_running_loop()
        settings = _Settings(
            policy=cast(SmtpPolicy, None),
            server_name="mx.example",
            limits=LimitsConfig(),
            tls_context=None,
            clock=SystemClock(),
            limiter=ConnectionLimiter(1, 1),
            tarpit_after=1,
            loop=loop,
        )
        ours = SmtpSession(settings)
        theirs = SMTP(object(), hostname="mx.example", loop=loop)
        return set(vars(ours)), set(vars(theirs))

    ours, theirs = asyncio.run(build())
    assert theirs - ours == set()
