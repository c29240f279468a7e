"""The replication codec: signed round trips, and every forgery refused with its reason."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sitemail.replication.codec import (
    MessageType,
    ReplicationMessage,
    ReplicationRejected,
    decode_message,
    encode_message,
)
from sitemail.replication.keys import SiteKey, generate_site_key

NOW = 1_800_000_000


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SiteKey]:
    base = tmp_path_factory.mktemp("keys")
    return {site: generate_site_key(Path(base / site)) for site in ("SiteA", "SiteB", "Mallory")}


def message(**changes: object) -> ReplicationMessage:
    fields: dict[str, object] = {
        "type": MessageType.ANSWER,
        "org": "ExchangeORG",
        "origin": "SiteA",
        "target": "SiteB",
        "seq": 7,
        "expires": NOW + 3600,
        "body": {"nc": "SiteA", "objects": [{"guid": "g1", "attrs": {"x": "é"}}], "more": False},
    }
    fields.update(changes)
    return ReplicationMessage(**fields)  # type: ignore[arg-type]


def encode(keys: dict[str, SiteKey], msg: ReplicationMessage, signer: str = "SiteA") -> bytes:
    return encode_message(
        msg,
        keys[signer],
        sender="sitemail-dsa@sitea.test",
        recipient="sitemail-dsa@siteb.test",
        now=NOW,
    )


def decode(
    keys: dict[str, SiteKey], raw: bytes, *, site: str = "SiteB", now: float = NOW
) -> ReplicationMessage:
    pinned = {"SiteA": keys["SiteA"].public}
    return decode_message(raw, key_for=pinned.get, org="ExchangeORG", site=site, now=now)


def test_codec_round_trip_keeps_every_field(keys: dict[str, SiteKey]) -> None:
    """What SiteA signs, SiteB reads back unchanged."""
    original = message()
    assert decode(keys, encode(keys, original)) == original


@pytest.mark.parametrize(
    ("raw_change", "reason"),
    [
        ({"target": "SiteC"}, "misaddressed"),
        ({"org": "OtherORG"}, "wrong-organisation"),
        ({"expires": NOW - 1}, "expired"),
        ({"origin": "SiteX"}, "unknown-origin"),
    ],
)
def test_codec_refuses_misaddressed_expired_foreign(
    keys: dict[str, SiteKey], raw_change: dict[str, object], reason: str
) -> None:
    """Correctly signed but meant for someone else, another org, too late, or from a stranger."""
    with pytest.raises(ReplicationRejected) as refused:
        decode(keys, encode(keys, message(**raw_change)))
    assert refused.value.reason == reason


def test_codec_refuses_forged_signature(keys: dict[str, SiteKey]) -> None:
    """A message claiming to come from SiteA but signed by another key is refused."""
    with pytest.raises(ReplicationRejected) as refused:
        decode(keys, encode(keys, message(), signer="Mallory"))
    assert refused.value.reason == "bad-signature"


def test_codec_refuses_tampered_payload(keys: dict[str, SiteKey]) -> None:
    """Changing the payload after signing (here: the objects) breaks the signature."""
    raw = encode(keys, message())
    mail = email.message_from_bytes(raw, policy=email.policy.SMTP)
    payload = json.loads(zlib.decompress(base64.b64decode(mail.get_payload())))
    payload["body"]["objects"][0]["attrs"]["x"] = "evil"
    mail.set_content(
        zlib.compress(json.dumps(payload).encode()),
        maintype="application",
        subtype="x-sitemail-replication",
        cte="base64",
        headers=[
            f"X-Sitemail-Origin: {mail['X-Sitemail-Origin']}",
            f"X-Sitemail-Signature: {mail['X-Sitemail-Signature']}",
        ],
    )
    with pytest.raises(ReplicationRejected) as refused:
        decode(keys, mail.as_bytes())
    assert refused.value.reason == "bad-signature"


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2000))
def test_codec_arbitrary_bytes_are_refused_cleanly(keys: dict[str, SiteKey], data: bytes) -> None:
    """Garbage never crashes the decoder: it is refused with a reason."""
    with pytest.raises(ReplicationRejected):
        decode(keys, data)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_codec_any_flipped_byte_is_refused_or_harmless(
    keys: dict[str, SiteKey], position: int, flip: int
) -> None:
    """One changed byte anywhere either is refused or decodes to the very same message."""
    original = message()
    raw = bytearray(encode(keys, original))
    raw[position % len(raw)] ^= flip
    try:
        decoded = decode(keys, bytes(raw))
    except ReplicationRejected:
        return
    assert decoded == original  # e.g. a byte in a header that is not signed


def test_codec_stranger_request_is_verified_before_it_is_inflated(
    keys: dict[str, SiteKey],
) -> None:
    """A self-signed request must verify against the key it carries before anything is
    inflated, and inflates to 64 KiB at most (a zlib bomb is refused, not expanded)."""
    from sitemail.replication.codec import decode_self_signed  # noqa: PLC0415

    request = message(type=MessageType.REQUEST, body={"key": keys["Mallory"].public.token})
    raw = encode(keys, request, signer="Mallory")
    decoded, key = decode_self_signed(raw, org="ExchangeORG", site="SiteB", now=NOW)
    assert key.token == keys["Mallory"].public.token
    assert decoded.body["key"] == key.token
    big = message(
        type=MessageType.REQUEST, body={"key": keys["Mallory"].public.token, "x": "a" * 10**6}
    )
    with pytest.raises(ReplicationRejected) as refused:
        decode_self_signed(
            encode(keys, big, signer="Mallory"), org="ExchangeORG", site="SiteB", now=NOW
        )
    assert refused.value.reason == "malformed"
    forged = raw.replace(b"X-Sitemail-Key: ed25519:", b"X-Sitemail-Key: ed25519:A", 1)
    with pytest.raises(ReplicationRejected):
        decode_self_signed(forged, org="ExchangeORG", site="SiteB", now=NOW)


def test_codec_deeply_nested_payload_is_refused_not_raised(keys: dict[str, SiteKey]) -> None:
    """A signed payload nested deeper than the JSON parser goes is malformed, no traceback."""
    from sitemail.replication import codec  # noqa: PLC0415

    with pytest.raises(ReplicationRejected) as refused:
        codec._parse_verified(b"[" * 10**6, "SiteA", org="ExchangeORG", site="SiteB", now=NOW)
    assert refused.value.reason == "malformed"


def test_codec_reads_our_part_wrapped_by_a_gateway_or_with_bare_lf(
    keys: dict[str, SiteKey],
) -> None:
    """The hand-written reader takes our single part at the top; a message a gateway wrapped
    in a multipart, or stored with bare LF line ends, still decodes (the full MIME parser)."""
    original = message()
    raw = encode(keys, original)
    assert decode(keys, raw.replace(b"\r\n", b"\n")) == original
    head, _, body = raw.partition(b"\r\n\r\n")
    part = b"\r\n".join(
        line
        for line in head.split(b"\r\n")
        if line.split(b":")[0]
        .lower()
        .startswith((b"content-", b"x-sitemail-origin", b"x-sitemail-signature", b"x-sitemail-key"))
    )
    wrapped = (
        b"From: gateway@relay.test\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain\r\n\r\nScanned by the gateway.\r\n"
        b"--b1\r\n" + part + b"\r\n\r\n" + body + b"--b1--\r\n"
    )
    assert decode(keys, wrapped) == original


def test_codec_refuses_to_write_a_header_it_would_have_to_encode(
    keys: dict[str, SiteKey],
) -> None:
    """Header values are ours and plain ASCII; anything else (a line break that would start
    a new header, non-ASCII) is a bug reported as such, never written out."""
    from sitemail.core.errors import InvalidValueError  # noqa: PLC0415

    for recipient in ("sitemail-dsa@b.test\r\nBcc: x@evil.test", "sitemail-dsa@bé.test"):
        with pytest.raises(InvalidValueError):
            encode_message(message(), keys["SiteA"], sender="a@a.test", recipient=recipient, now=0)


def test_codec_reads_header_fields_a_gateway_refolded(keys: dict[str, SiteKey]) -> None:
    """A gateway that rewrites the header (here Python's own SMTP policy, which folds the long
    signature field into RFC 2047 encoded words) does not break a genuine message; a broken
    encoded word is refused as malformed, not raised."""
    original = message()
    mail = email.message_from_bytes(encode(keys, original), policy=email.policy.SMTP)
    refolded = mail.as_bytes()
    assert b"X-Sitemail-Signature: =?utf-8?q?" in refolded
    assert decode(keys, refolded) == original
    head, _, body = refolded.partition(b"\r\n\r\n")
    broken = b"\r\n".join(
        b"X-Sitemail-Signature: =?utf-8?b?!!not base64!!?="
        if line.startswith(b"X-Sitemail-Sig")
        else line
        for line in head.split(b"\r\n")
        if not line.startswith(b" ")
    )
    with pytest.raises(ReplicationRejected) as refused:
        decode(keys, broken + b"\r\n\r\n" + body)
    assert (refused.value.reason, refused.value.detail) == (
        "malformed",
        "bad X-Sitemail-Signature field",
    )


def test_codec_refuses_mime_nested_past_the_bound_without_raising(
    keys: dict[str, SiteKey],
) -> None:
    """Our part wrapped 3,000 multiparts deep (the email parser would raise RecursionError)
    is refused as malformed; wrapped a few levels deep, as gateways do, it still decodes."""
    original = message()
    head, _, body = encode(keys, original).partition(b"\r\n\r\n")
    part = b"\r\n".join(
        line for line in head.split(b"\r\n") if line.lower().startswith((b"content-", b"x-"))
    )

    def wrapped(depth: int) -> bytes:
        opening = b"".join(
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
            for i in range(depth)
        )
        closing = b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))
        return b"From: x@y.test\r\n" + opening + part + b"\r\n\r\n" + body + closing

    assert decode(keys, wrapped(5)) == original
    with pytest.raises(ReplicationRejected) as refused:
        decode(keys, wrapped(3000))
    assert refused.value.reason == "malformed"
    assert "nested deeper than 100" in refused.value.detail
