"""Delivery status notifications (RFC 3461, 3464, 6522, 6533), read back with Python's `email`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sitemail.core.envelope import BodyType, Envelope, EnvelopeRecipient, Notify, Ret
from sitemail.queue.dsn import (
    DEFAULT_MAX_ORIGINAL,
    DsnAction,
    DsnEntry,
    DsnKind,
    build_dsn,
    dsn_body_type,
    is_dsn_worthy,
)

NOW = datetime(2024, 5, 1, 12, 30, 15, tzinfo=UTC)
ARRIVAL = NOW - timedelta(hours=5)
MTA = "mail.sitea.example.com"
SENDER = "alice@sitea.example.com"
BOB = EnvelopeRecipient("bob@example.net")
CAROL = EnvelopeRecipient("carol@example.org")
ORIGINAL = (
    b"From: Alice <alice@sitea.example.com>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: quarterly figures\r\n"
    b"Message-ID: <orig-1@sitea.example.com>\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"the figures are attached.\r\n"
)


def envelope(
    *recipients: EnvelopeRecipient,
    sender: str = SENDER,
    ret: Ret | None = None,
    envid: str = "",
) -> Envelope:
    return Envelope(sender=sender, recipients=recipients or (BOB,), ret=ret, envid=envid)


def failed(recipient: EnvelopeRecipient = BOB, **fields: Any) -> DsnEntry:
    values: dict[str, Any] = {
        "action": "failed",
        "status": "5.1.1",
        "diagnostic": "550 5.1.1 <bob@example.net>: Recipient address rejected",
        "remote_mta": "mx1.example.net",
        "last_attempt": NOW,
    }
    values.update(fields)
    return DsnEntry(recipient=recipient, **values)


def delayed(recipient: EnvelopeRecipient = BOB, **fields: Any) -> DsnEntry:
    values: dict[str, Any] = {
        "action": "delayed",
        "status": "4.4.1",
        "diagnostic": "451 4.4.1 connection timed out",
        "remote_mta": "mx1.example.net",
        "last_attempt": NOW,
        "will_retry_until": ARRIVAL + timedelta(hours=48),
    }
    values.update(fields)
    return DsnEntry(recipient=recipient, **values)


def delivered(recipient: EnvelopeRecipient, action: str = "delivered") -> DsnEntry:
    return DsnEntry(
        recipient=recipient,
        action=action,
        status="2.0.0",
        diagnostic="250 2.0.0 Ok: queued as 4F1",
        remote_mta="mx1.example.net",
        last_attempt=NOW,
    )


def build(
    entries: Sequence[DsnEntry],
    *,
    env: Envelope | None = None,
    kind: DsnKind = DsnKind.FAILURE,
    content: bytes = ORIGINAL,
    now: datetime = NOW,
    queue_id: str = "018F3A2B4C5DAB12CD34",
    **options: Any,
) -> bytes | None:
    return build_dsn(
        reporting_mta=MTA,
        envelope=env or envelope(*(e.recipient for e in entries)),
        queue_id=queue_id,
        message_id="<orig-1@sitea.example.com>",
        arrival=ARRIVAL,
        content=content,
        entries=list(entries),
        kind=kind,
        now=now,
        **options,
    )


def built(entries: Sequence[DsnEntry], **kwargs: Any) -> bytes:
    data = build(entries, **kwargs)
    assert data is not None
    return data


def parse(data: bytes) -> EmailMessage:
    return message_from_bytes(data, policy=policy.default)


def parts(data: bytes) -> list[EmailMessage]:
    report = parse(data)
    assert report.get_content_type() == "multipart/report"
    found = list(report.iter_parts())
    assert len(found) == 3
    return [cast(EmailMessage, p) for p in found]


def raw_parts(data: bytes) -> list[tuple[bytes, bytes]]:
    """(headers, body) of each part, cut from the bytes exactly as sent."""
    boundary = parse(data).get_boundary()
    assert boundary is not None
    pieces = data.split(b"\r\n--" + boundary.encode())
    assert pieces[-1] == b"--\r\n"
    out = []
    for piece in pieces[1:-1]:
        assert piece.startswith(b"\r\n")
        headers, _, body = piece[2:].partition(b"\r\n\r\n")
        out.append((headers, body))
    return out


def status_blocks(data: bytes) -> list[Message]:
    """The delivery-status fields, block by block (per-message first), parsed by `email`."""
    status = parts(data)[1]
    if status.get_content_type() == "message/delivery-status":
        blocks = status.get_payload()
        assert isinstance(blocks, list)
        return [block for block in blocks if isinstance(block, Message)]
    body = raw_parts(data)[1][1]
    parser = BytesParser(policy=policy.default)
    return [parser.parsebytes(block + b"\r\n") for block in body.split(b"\r\n\r\n") if block]


def recipient_blocks(data: bytes) -> list[Message]:
    return status_blocks(data)[1:]


def date_of(field: object) -> datetime:
    return parsedate_to_datetime(str(field))


def text_of(data: bytes) -> str:
    text = parts(data)[0]
    assert text.get_content_type() == "text/plain"
    return str(text.get_content())


def original_of(data: bytes) -> EmailMessage:
    return parts(data)[2]


# -- the report as a message ---------------------------------------------------------------


def test_build_dsn_failure_has_report_headers() -> None:
    """A failure report is a complete multipart/report message addressed to the sender."""
    data = built([failed()])
    report = parse(data)
    assert str(report["From"]) == f"Mail Delivery System <MAILER-DAEMON@{MTA}>"
    assert report["To"].addresses[0].addr_spec == SENDER
    assert f"\r\nTo: <{SENDER}>\r\n".encode() in data
    assert str(report["Subject"]) == "Undelivered Mail Returned to Sender"
    assert report["Date"].datetime == NOW
    assert re.fullmatch(rf"<[^<>@\s]+@{re.escape(MTA)}>", str(report["Message-ID"]))
    assert str(report["Auto-Submitted"]) == "auto-replied"
    assert str(report["MIME-Version"]) == "1.0"
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report.defects == []


def test_build_dsn_postmaster_given_is_the_from_address() -> None:
    """A configured postmaster address replaces MAILER-DAEMON@reporting-mta."""
    report = parse(built([failed()], postmaster="postmaster@sitea.example.com"))
    assert str(report["From"]) == "Mail Delivery System <postmaster@sitea.example.com>"


def test_build_dsn_parts_are_explanation_report_original() -> None:
    """Part 1 is for people, part 2 for machines, part 3 the original (RFC 6522)."""
    text, status, original = parts(built([failed()]))
    assert text.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    assert original.get_content_type() == "message/rfc822"


def test_build_dsn_message_id_is_unique_per_report() -> None:
    """Reports for different messages, times or kinds get different Message-IDs."""
    ids = {
        str(parse(built([failed()], queue_id="Q1"))["Message-ID"]),
        str(parse(built([failed()], queue_id="Q2"))["Message-ID"]),
        str(parse(built([failed()], now=NOW + timedelta(seconds=1)))["Message-ID"]),
        str(parse(built([delayed()], kind=DsnKind.DELAY))["Message-ID"]),
    }
    assert len(ids) == 4


def test_build_dsn_same_inputs_give_same_bytes() -> None:
    """The builder is pure: the clock is an argument and nothing random goes in."""
    assert built([failed()]) == built([failed()])


def test_build_dsn_naive_datetimes_are_taken_as_utc() -> None:
    """A naive `now` is read as UTC rather than as the machine's local time."""
    report = parse(built([failed()], now=NOW.replace(tzinfo=None)))
    assert report["Date"].datetime == NOW


# -- the machine-readable report -------------------------------------------------------------


def test_build_dsn_per_message_fields() -> None:
    """Reporting-MTA, Original-Envelope-Id (from ENVID) and Arrival-Date head the report."""
    data = built([failed()], env=envelope(BOB, envid="QQ314159"))
    per_message = status_blocks(data)[0]
    assert str(per_message["Reporting-MTA"]) == f"dns; {MTA}"
    assert str(per_message["Original-Envelope-Id"]) == "QQ314159"
    assert date_of(per_message["Arrival-Date"]) == ARRIVAL
    assert per_message["Final-Recipient"] is None


def test_build_dsn_without_envid_omits_original_envelope_id() -> None:
    """No ENVID on MAIL FROM means no Original-Envelope-Id field."""
    assert status_blocks(built([failed()]))[0]["Original-Envelope-Id"] is None


def test_build_dsn_failed_recipient_fields() -> None:
    """A failed recipient carries Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code."""
    (block,) = recipient_blocks(built([failed()]))
    assert str(block["Final-Recipient"]) == "rfc822; bob@example.net"
    assert str(block["Action"]) == "failed"
    assert str(block["Status"]) == "5.1.1"
    assert str(block["Remote-MTA"]) == "dns; mx1.example.net"
    assert str(block["Diagnostic-Code"]) == (
        "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected"
    )
    assert date_of(block["Last-Attempt-Date"]) == NOW
    assert block["Will-Retry-Until"] is None
    assert block["Original-Recipient"] is None


def test_build_dsn_own_decision_has_no_remote_mta() -> None:
    """When we decided ourselves (no remote host), Remote-MTA is left out."""
    entry = failed(remote_mta="", status="4.4.7", diagnostic="gave up after 48 h")
    (block,) = recipient_blocks(built([entry]))
    assert block["Remote-MTA"] is None
    assert str(block["Status"]) == "4.4.7"
    assert str(block["Diagnostic-Code"]) == "smtp; gave up after 48 h"


def test_build_dsn_orcpt_passes_through_as_original_recipient() -> None:
    """ORCPT given at RCPT comes back unchanged as Original-Recipient (RFC 3461 4.2)."""
    rcpt = EnvelopeRecipient("bob@example.net", orcpt="rfc822;Bob.Smith@Example.NET")
    (block,) = recipient_blocks(built([failed(rcpt)]))
    assert str(block["Original-Recipient"]) == "rfc822; Bob.Smith@Example.NET"
    assert str(block["Final-Recipient"]) == "rfc822; bob@example.net"


def test_build_dsn_multiple_recipients_share_one_report() -> None:
    """Several recipients of one message give one report with one block each, in order."""
    dave = EnvelopeRecipient("dave@example.com")
    entries = [
        failed(BOB),
        failed(CAROL, status="5.2.2", diagnostic="552 5.2.2 mailbox full", remote_mta="mx.org"),
        failed(dave, status="5.4.4", diagnostic="no mail host for example.com", remote_mta=""),
    ]
    data = built(entries)
    blocks = recipient_blocks(data)
    assert [str(b["Final-Recipient"]) for b in blocks] == [
        "rfc822; bob@example.net",
        "rfc822; carol@example.org",
        "rfc822; dave@example.com",
    ]
    assert [str(b["Status"]) for b in blocks] == ["5.1.1", "5.2.2", "5.4.4"]
    assert [str(b["Action"]) for b in blocks] == ["failed"] * 3


def test_build_dsn_malformed_status_falls_back_to_the_action_class() -> None:
    """A status that is not an RFC 3463 code is reported as the generic code of its class."""
    entries = [failed(BOB, status=""), delayed(CAROL, status="timeout")]
    blocks = recipient_blocks(built(entries))
    assert [str(b["Status"]) for b in blocks] == ["5.0.0", "4.0.0"]


def test_build_dsn_line_breaks_in_diagnostic_cannot_add_fields() -> None:
    """CR/LF inside a remote reply become spaces: no injected field, no injected header."""
    evil = "550 no such user\r\nBcc: victim@example.com\r\n\r\nAction: delivered"
    data = built([failed(diagnostic=evil)])
    (block,) = recipient_blocks(data)
    assert block["Bcc"] is None
    assert str(block["Action"]) == "failed"
    assert str(block["Diagnostic-Code"]) == (
        "smtp; 550 no such user Bcc: victim@example.com Action: delivered"
    )
    assert parse(data)["Bcc"] is None


def test_build_dsn_long_diagnostic_is_folded_and_unfolds_intact() -> None:
    """A long reply is folded under 78 octets and reads back as the same text."""
    reply = "550 5.7.1 " + " ".join(f"word{i}" for i in range(60))
    data = built([failed(diagnostic=reply)])
    (block,) = recipient_blocks(data)
    assert str(block["Diagnostic-Code"]) == f"smtp; {reply}"
    status_body = raw_parts(data)[1][1]
    assert max(len(line) for line in status_body.split(b"\r\n")) <= 78


# -- the explanation -------------------------------------------------------------------------


def test_build_dsn_text_lists_each_recipient_with_status_and_diagnostic() -> None:
    """The human part names every recipient, its status, the host and what it said."""
    entries = [failed(BOB), failed(CAROL, status="5.2.2", diagnostic="552 5.2.2 mailbox full")]
    text = text_of(built(entries))
    assert f"This is the mail system at {MTA}." in text
    assert "<bob@example.net>: failed, status 5.1.1" in text
    assert "mx1.example.net said: 550 5.1.1 <bob@example.net>: Recipient address" in text
    assert "<carol@example.org>: failed, status 5.2.2" in text
    assert "552 5.2.2 mailbox full" in text
    assert "<orig-1@sitea.example.com>" in text


def test_build_dsn_text_with_utf8_is_quoted_printable() -> None:
    """Non-ASCII text is sent as UTF-8 quoted-printable so the part stays 7-bit."""
    text_part = raw_parts(built([failed(diagnostic="550 Empfänger unbekannt")]))[0]
    assert text_part[1].isascii()
    assert b"quoted-printable" in text_part[0]
    assert "550 Empfänger unbekannt" in text_of(
        built([failed(diagnostic="550 Empfänger unbekannt")])
    )


# -- kinds and NOTIFY --------------------------------------------------------------------------


def test_build_dsn_delay_reports_will_retry_until() -> None:
    """A delay notice says delayed, when it was last tried and until when it will be retried."""
    data = built([delayed()], kind=DsnKind.DELAY)
    assert str(parse(data)["Subject"]) == "Delayed Mail (still being retried)"
    (block,) = recipient_blocks(data)
    assert str(block["Action"]) == "delayed"
    assert str(block["Status"]) == "4.4.1"
    assert date_of(block["Will-Retry-Until"]) == ARRIVAL + timedelta(hours=48)
    assert date_of(block["Last-Attempt-Date"]) == NOW
    assert "will be retried until" in text_of(data)


def test_build_dsn_success_reports_delivered_and_relayed() -> None:
    """A success notice covers delivered and relayed recipients that asked NOTIFY=SUCCESS."""
    bob = EnvelopeRecipient("bob@example.net", frozenset({Notify.SUCCESS}))
    carol = EnvelopeRecipient("carol@example.org", frozenset({Notify.SUCCESS, Notify.FAILURE}))
    entries = [delivered(bob), delivered(carol, "relayed")]
    data = built(entries, kind=DsnKind.SUCCESS)
    assert str(parse(data)["Subject"]) == "Successful Mail Delivery Report"
    assert [str(b["Action"]) for b in recipient_blocks(data)] == ["delivered", "relayed"]
    assert [str(b["Status"]) for b in recipient_blocks(data)] == ["2.0.0", "2.0.0"]


def test_build_dsn_notify_never_gives_none() -> None:
    """NOTIFY=NEVER suppresses every notice for that recipient."""
    never = EnvelopeRecipient("bob@example.net", frozenset({Notify.NEVER}))
    assert build([failed(never)]) is None
    assert build([delayed(never)], kind=DsnKind.DELAY) is None
    assert build([delivered(never)], kind=DsnKind.SUCCESS) is None


def test_build_dsn_default_notify_gives_no_success_notice() -> None:
    """Without NOTIFY, failures and delays are reported, successes are not (RFC 3461 4.1)."""
    assert build([delivered(BOB)], kind=DsnKind.SUCCESS) is None
    assert build([failed(BOB)]) is not None
    assert build([delayed(BOB)], kind=DsnKind.DELAY) is not None


def test_build_dsn_notify_success_only_gives_no_failure_notice() -> None:
    """NOTIFY=SUCCESS alone asks for no failure or delay notice."""
    bob = EnvelopeRecipient("bob@example.net", frozenset({Notify.SUCCESS}))
    assert build([failed(bob)]) is None
    assert build([delayed(bob)], kind=DsnKind.DELAY) is None
    assert build([delivered(bob)], kind=DsnKind.SUCCESS) is not None


def test_build_dsn_leaves_out_recipients_that_did_not_ask() -> None:
    """Only recipients whose NOTIFY covers this kind appear in a shared report."""
    never = EnvelopeRecipient("never@example.net", frozenset({Notify.NEVER}))
    delay_only = EnvelopeRecipient("delay@example.net", frozenset({Notify.DELAY}))
    data = built([failed(never), failed(BOB), failed(delay_only)])
    assert [str(b["Final-Recipient"]) for b in recipient_blocks(data)] == [
        "rfc822; bob@example.net"
    ]
    assert "never@example.net" not in text_of(data)


def test_build_dsn_null_sender_gives_none() -> None:
    """Nothing is ever sent to <>: no DSN for a DSN or for any null-sender message."""
    assert build([failed()], env=envelope(BOB, sender="")) is None
    assert build([delayed()], env=envelope(BOB, sender=""), kind=DsnKind.DELAY) is None


def test_build_dsn_no_entries_gives_none() -> None:
    """An empty list of entries gives no report."""
    assert build([]) is None


# -- the original ----------------------------------------------------------------------------


@pytest.mark.parametrize("ret", [Ret.FULL, None])
def test_build_dsn_failure_returns_full_original(ret: Ret | None) -> None:
    """A failure returns the whole message for RET=FULL and when RET was not given."""
    data = built([failed()], env=envelope(BOB, ret=ret))
    original = original_of(data)
    assert original.get_content_type() == "message/rfc822"
    attached = original.get_payload(0)
    assert isinstance(attached, Message)
    assert str(attached["Subject"]) == "quarterly figures"
    assert raw_parts(data)[2][1] == ORIGINAL
    assert "attached below, as it was received" in text_of(data)


def test_build_dsn_ret_hdrs_returns_headers_only() -> None:
    """RET=HDRS returns the header section only, as text/rfc822-headers."""
    data = built([failed()], env=envelope(BOB, ret=Ret.HDRS))
    original = original_of(data)
    assert original.get_content_type() == "text/rfc822-headers"
    headers = raw_parts(data)[2][1]
    assert headers == ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n"
    assert b"the figures are attached" not in data
    assert "RET=HDRS" in text_of(data)


@pytest.mark.parametrize(
    ("kind", "entry"),
    [(DsnKind.DELAY, delayed()), (DsnKind.SUCCESS, delivered(CAROL))],
)
def test_build_dsn_delay_and_success_return_headers_only(kind: DsnKind, entry: DsnEntry) -> None:
    """Delay and success notices carry the headers only, even with RET=FULL."""
    rcpt = EnvelopeRecipient(entry.recipient.address, frozenset(Notify) - {Notify.NEVER})
    entry = DsnEntry(rcpt, entry.action, entry.status, entry.diagnostic, entry.remote_mta)
    data = built([entry], env=envelope(rcpt, ret=Ret.FULL), kind=kind)
    assert original_of(data).get_content_type() == "text/rfc822-headers"
    assert b"the figures are attached" not in data


def test_build_dsn_original_over_the_cap_returns_headers_and_says_so() -> None:
    """A message bigger than the cap comes back as headers only, with a sentence saying why."""
    big = ORIGINAL + b"x" * 200 + b"\r\n"
    data = built([failed()], content=big, max_original=len(big) - 1)
    assert original_of(data).get_content_type() == "text/rfc822-headers"
    assert b"x" * 200 not in data
    text = " ".join(text_of(data).split())
    assert f"Your message was {len(big)} bytes, more than the {len(big) - 1} bytes" in text
    assert built([failed()], content=big, max_original=len(big)).count(b"x" * 200) == 1


def test_build_dsn_original_nested_past_the_bound_returns_headers_and_says_so() -> None:
    """An original whose MIME nesting, wrapped in the report, would pass the bound every
    reader relies on comes back as headers only; one level less comes back whole."""

    def nested(depth: int) -> bytes:
        opening = b"".join(
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
            for i in range(depth)
        )
        return b"Subject: deep\r\n" + opening + b"\r\nhi\r\n"

    data = built([failed()], content=nested(99))
    assert original_of(data).get_content_type() == "text/rfc822-headers"
    assert "nested deeper than 98" in " ".join(text_of(data).split())
    assert original_of(built([failed()], content=nested(98))).get_content_type() == (
        "message/rfc822"
    )


def test_build_dsn_default_cap_is_one_mebibyte() -> None:
    """By default an original of 1 MiB is returned whole and one octet more is not."""
    assert DEFAULT_MAX_ORIGINAL == 1024 * 1024
    line = b"y" * 78 + b"\r\n"
    body = line * (DEFAULT_MAX_ORIGINAL // len(line) + 1)
    fits = ORIGINAL + body[: DEFAULT_MAX_ORIGINAL - len(ORIGINAL)]
    assert len(fits) == DEFAULT_MAX_ORIGINAL
    assert original_of(built([failed()], content=fits)).get_content_type() == "message/rfc822"
    too_big = fits + b"!"
    assert (
        original_of(built([failed()], content=too_big)).get_content_type() == "text/rfc822-headers"
    )


def test_build_dsn_eight_bit_original_is_preserved_exactly() -> None:
    """An 8-bit body (UTF-8 and Latin-1 octets) comes back octet for octet, labelled 8bit."""
    content = (
        b"From: alice@sitea.example.com\r\n"
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        + "Grüße, café, 日本語\r\n".encode()
        + b"latin-1 \xe9\xe8\r\n"
        + b"a very long line " * 20
        + b"\r\n"
    )
    data = built([failed()], content=content)
    headers, body = raw_parts(data)[2]
    assert body == content
    assert b"Content-Type: message/rfc822" in headers
    assert b"Content-Transfer-Encoding: 8bit" in headers
    assert parse(data)["Content-Transfer-Encoding"] == "8bit"
    attached = original_of(data).get_payload(0)
    assert isinstance(attached, EmailMessage)
    assert str(attached["Subject"]) == "café"
    assert dsn_body_type(data) is BodyType.EIGHT_BIT


def test_build_dsn_seven_bit_report_needs_no_8bitmime() -> None:
    """An all-ASCII original and report make a 7-bit message."""
    data = built([failed()])
    assert data.isascii()
    assert dsn_body_type(data) is BodyType.SEVEN_BIT
    assert parse(data)["Content-Transfer-Encoding"] is None


def test_build_dsn_utf8_headers_use_message_global() -> None:
    """An original with raw UTF-8 headers (SMTPUTF8) is returned as message/global (RFC 6532)."""
    content = "From: jörg@bücher.example\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode()
    data = built([failed()], content=content)
    assert original_of(data).get_content_type() == "message/global"
    assert raw_parts(data)[2][1] == content
    hdrs = built([failed()], content=content, env=envelope(BOB, ret=Ret.HDRS))
    assert original_of(hdrs).get_content_type() == "message/global-headers"
    assert raw_parts(hdrs)[2][1] == content.split(b"\r\n\r\n")[0] + b"\r\n"


def test_build_dsn_utf8_recipient_uses_global_delivery_status() -> None:
    """A UTF-8 address is reported as utf-8 type in message/global-delivery-status (RFC 6533)."""
    rcpt = EnvelopeRecipient("jörg@bücher.example", orcpt="utf-8;jörg@bücher.example")
    data = built([failed(rcpt)])
    assert parts(data)[1].get_content_type() == "message/global-delivery-status"
    (block,) = recipient_blocks(data)
    assert str(block["Final-Recipient"]) == "utf-8; jörg@bücher.example"
    assert str(block["Original-Recipient"]) == "utf-8; jörg@bücher.example"
    assert str(block["Status"]) == "5.1.1"


def test_build_dsn_headers_only_original_without_body() -> None:
    """An original with no blank line is all header section; it still comes back whole."""
    content = b"Subject: only headers\r\nX-Test: 1\r\n"
    data = built([failed()], content=content, env=envelope(BOB, ret=Ret.HDRS))
    assert raw_parts(data)[2][1] == content


# -- entries and helpers ------------------------------------------------------------------------


def test_dsn_entry_action_becomes_a_dsn_action() -> None:
    """A plain string action is stored as the DsnAction member."""
    assert failed().action is DsnAction.FAILED


def test_dsn_entry_unknown_action_is_rejected() -> None:
    """An action outside RFC 3464 2.3.3 is a programming error, caught at construction."""
    with pytest.raises(ValueError, match="bounced"):
        failed(action="bounced")


def test_dsn_kind_names_its_notify_keyword() -> None:
    """Each kind answers the NOTIFY keyword that asks for it."""
    assert DsnKind.FAILURE.notify is Notify.FAILURE
    assert DsnKind.DELAY.notify is Notify.DELAY
    assert DsnKind.SUCCESS.notify is Notify.SUCCESS


def test_is_dsn_worthy_ordinary_sender() -> None:
    """A message with a sender and a default recipient may get a DSN."""
    assert is_dsn_worthy(envelope(BOB))


def test_is_dsn_worthy_null_sender_is_not() -> None:
    """A null-sender message (a DSN itself) never gets a DSN."""
    assert not is_dsn_worthy(envelope(BOB, sender=""))


def test_is_dsn_worthy_all_notify_never_is_not() -> None:
    """When every recipient said NOTIFY=NEVER there is nothing to report."""
    never = EnvelopeRecipient("bob@example.net", frozenset({Notify.NEVER}))
    assert not is_dsn_worthy(envelope(never))
    assert is_dsn_worthy(envelope(never, CAROL))


# -- properties ------------------------------------------------------------------------------

_octet_lines = st.lists(
    st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    max_size=12,
)
_header_lines = st.lists(
    st.binary(min_size=1, max_size=60)
    .map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
    .filter(lambda b: b.strip() != b"")
    .map(lambda b: b"X-H: " + b),
    max_size=6,
)
_text = st.text(max_size=300)
_rcpt = st.builds(
    EnvelopeRecipient,
    address=st.from_regex(r"[a-z0-9.]{1,20}@[a-z0-9]{1,10}\.example", fullmatch=True),
    orcpt=st.one_of(st.just(""), _text.map(lambda t: "rfc822;" + t)),
)


@settings(max_examples=150, deadline=None)
@given(
    head=_header_lines,
    body=_octet_lines,
    rcpts=st.lists(_rcpt, min_size=1, max_size=5),
    diagnostics=st.lists(_text, min_size=5, max_size=5),
    remote=_text,
    envid=_text,
    ret=st.sampled_from([None, Ret.FULL, Ret.HDRS]),
)
def test_build_dsn_any_input_gives_a_well_formed_report(
    head: list[bytes],
    body: list[bytes],
    rcpts: list[EnvelopeRecipient],
    diagnostics: list[str],
    remote: str,
    envid: str,
    ret: Ret | None,
) -> None:
    """Whatever the inputs, the report parses, keeps its shape and the original octets."""
    content = b"".join(h + b"\r\n" for h in head) + b"\r\n" + b"".join(b + b"\r\n" for b in body)
    entries = [
        failed(r, diagnostic=d, remote_mta=remote) for r, d in zip(rcpts, diagnostics, strict=False)
    ]
    data = built(entries, env=envelope(*rcpts, ret=ret, envid=envid), content=content)

    lines = data.split(b"\r\n")
    assert lines[-1] == b""
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert all(len(line) <= 998 for line in lines)
    report = parse(data)
    assert report.get_content_type() == "multipart/report"
    assert report["To"].addresses[0].addr_spec == SENDER
    blocks = recipient_blocks(data)
    assert len(blocks) == len(entries)
    assert [str(b["Final-Recipient"]).split("; ", 1)[1] for b in blocks] == [
        r.address for r in rcpts
    ]
    assert all(str(b["Action"]) == "failed" for b in blocks)
    returned = raw_parts(data)[2][1]
    if ret is Ret.HDRS:
        assert returned == b"".join(h + b"\r\n" for h in head)
    else:
        assert returned == content
    boundary = report.get_boundary()
    assert boundary is not None
    assert b"--" + boundary.encode() not in content
