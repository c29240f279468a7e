"""Delivery status notifications against golden files: every byte of each kind of report.

`build_dsn` reads no clock and no randomness, so the same inputs give the same bytes; each
case below is written out in tests/golden/dsn/<case>.eml. Any change of a header, a field of
the delivery-status part, the wording or the MIME structure fails here and must be reviewed.
`SITEMAIL_UPDATE_GOLDEN=1` rewrites the files from the current code.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sitemail.core.envelope import Envelope, EnvelopeRecipient, Notify, Ret
from sitemail.queue.dsn import DsnEntry, DsnKind, build_dsn

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "dsn"
UPDATE = os.environ.get("SITEMAIL_UPDATE_GOLDEN") == "1"

ARRIVAL = datetime(2026, 12, 7, 9, 30, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 7, 13, 30, 0, tzinfo=UTC)
RETRY_UNTIL = datetime(2026, 12, 9, 9, 30, 0, tzinfo=UTC)

ORIGINAL = (
    b"From: Alice <alice@outside.test>\r\n"
    b"To: jsmith@example.com, kbrown@example.com\r\n"
    b"Subject: quarterly figures\r\n"
    b"Message-ID: <q4@outside.test>\r\n"
    b"\r\n"
    b"The figures are attached.\r\n"
)
UTF8_ORIGINAL = (
    "From: Zoë <zoe@outside.test>\r\n"
    "To: jürgen@example.com\r\n"
    "Subject: Grüße\r\n"
    "Message-ID: <gruesse@outside.test>\r\n"
    "\r\n"
    "Schöne Grüße.\r\n"
).encode()

JSMITH = EnvelopeRecipient("jsmith@example.com", orcpt="rfc822;jsmith@example.com")
KBROWN = EnvelopeRecipient(
    "kbrown@example.com", notify=frozenset({Notify.SUCCESS, Notify.FAILURE, Notify.DELAY})
)
JUERGEN = EnvelopeRecipient("jürgen@example.com")


def report(
    kind: DsnKind,
    entries: list[DsnEntry],
    *,
    content: bytes = ORIGINAL,
    ret: Ret | None = None,
    max_original: int = 1024 * 1024,
    smtputf8: bool = False,
) -> bytes:
    envelope = Envelope(
        sender="alice@outside.test",
        recipients=tuple(e.recipient for e in entries),
        ret=ret,
        envid="Q4-2026",
        smtputf8=smtputf8,
        client_address="192.0.2.7",
        client_name="mail.outside.test",
    )
    built = build_dsn(
        reporting_mta="servera.sitea.example.com",
        envelope=envelope,
        queue_id="4fQ7a0Zk2Lm",
        message_id="<q4@outside.test>",
        arrival=ARRIVAL,
        content=content,
        entries=entries,
        kind=kind,
        now=NOW,
        postmaster="postmaster@example.com",
        max_original=max_original,
    )
    assert built is not None
    return built


def failed(recipient: EnvelopeRecipient) -> DsnEntry:
    return DsnEntry(
        recipient,
        "failed",
        "5.1.1",
        diagnostic=f"550 5.1.1 <{recipient.address}>: no such user here",
        remote_mta="serverb.siteb.example.com",
        last_attempt=NOW,
    )


def delayed(recipient: EnvelopeRecipient) -> DsnEntry:
    return DsnEntry(
        recipient,
        "delayed",
        "4.4.1",
        diagnostic="connection to serverb.siteb.example.com refused",
        last_attempt=NOW,
        will_retry_until=RETRY_UNTIL,
    )


CASES: dict[str, bytes] = {
    "failure_full_original": report(DsnKind.FAILURE, [failed(JSMITH)]),
    "failure_ret_hdrs": report(DsnKind.FAILURE, [failed(JSMITH)], ret=Ret.HDRS),
    "failure_original_too_big": report(DsnKind.FAILURE, [failed(JSMITH)], max_original=64),
    "failure_two_recipients": report(DsnKind.FAILURE, [failed(JSMITH), failed(KBROWN)]),
    "delay": report(DsnKind.DELAY, [delayed(JSMITH)]),
    "success_relayed": report(
        DsnKind.SUCCESS,
        [DsnEntry(KBROWN, "relayed", "2.0.0", diagnostic="250 2.0.0 Ok: queued as 7Hq2")],
    ),
    "failure_utf8": report(
        DsnKind.FAILURE, [failed(JUERGEN)], content=UTF8_ORIGINAL, smtputf8=True
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dsn_matches_its_golden_file(case: str) -> None:
    """The report built from fixed inputs is byte for byte the golden file."""
    path = GOLDEN / f"{case}.eml"
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_bytes(CASES[case])
        pytest.skip(f"{path.name} rewritten from build_dsn: review the diff")
    assert CASES[case] == path.read_bytes()


def test_every_golden_dsn_has_a_case() -> None:
    """No golden file is left over from a removed case (it would test nothing)."""
    assert {p.stem for p in GOLDEN.glob("*.eml")} == set(CASES)
