"""Implements the modified UTF-7 specification used for encoding and decoding
mailbox names in IMAP.

See Also:
    `RFC 3501 5.1.3 <https://tools.ietf.org/html/rfc3501#section-5.1.3>`_

"""

from __future__ import annotations

__all__ = ["ModUtf7Error", "modutf7_decode", "modutf7_encode"]


def _modified_b64encode(src: str) -> bytes:
    # Inspired by Twisted Python's implementation:
    #   https://twistedmatrix.com/trac/browser/trunk/LICENSE
    src_utf7 = src.encode("utf-7")
    return src_utf7[1:-1].replace(b"/", b",")


_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


class ModUtf7Error(ValueError):
    """The bytes are not valid modified UTF-7 (RFC 3501 5.1.3)."""


def _modified_b64decode(src: bytes) -> str:
    if not src or not _B64_CHARS.issuperset(src):
        raise ModUtf7Error("bad base64 in a shifted sequence")
    try:
        decoded = (b"+%b-" % src.replace(b",", b"/")).decode("utf-7")
    except UnicodeDecodeError as exc:
        raise ModUtf7Error("bad UTF-16 in a shifted sequence") from exc
    if any(0x20 <= ord(char) <= 0x7E for char in decoded):
        raise ModUtf7Error("printable US-ASCII must not be shifted")
    return decoded


def modutf7_encode(data: str) -> bytes:
    """Encode the string using modified UTF-7.

    Args:
        data: The input string to encode.

    """
    ret = bytearray()
    is_usascii = True
    encode_start = None
    for i, symbol in enumerate(data):
        charpoint = ord(symbol)
        if is_usascii:
            if charpoint == 0x26:
                ret.extend(b"&-")
            elif 0x20 <= charpoint <= 0x7E:
                ret.append(charpoint)
            else:
                encode_start = i
                is_usascii = False
        elif 0x20 <= charpoint <= 0x7E:
            to_encode = data[encode_start:i]
            encoded = _modified_b64encode(to_encode)
            ret.append(0x26)
            ret.extend(encoded)
            ret.append(0x2D)
            ret.extend(b"&-" if charpoint == 0x26 else bytes((charpoint,)))
            is_usascii = True
    if not is_usascii:
        to_encode = data[encode_start:]
        encoded = _modified_b64encode(to_encode)
        ret.append(0x26)
        ret.extend(encoded)
        ret.append(0x2D)
    return bytes(ret)


def modutf7_decode(data: bytes) -> str:
    """Decode the bytestring using modified UTF-7.

    Every step consumes input, so any input ends (upstream's decoder looped for ever on an
    ``&`` without its closing ``-``).

    Args:
        data: The encoded bytestring to decode.

    Raises:
        ModUtf7Error: The input is not valid modified UTF-7.

    """
    parts: list[str] = []
    data = bytes(data)
    i, end = 0, len(data)
    while i < end:
        byte = data[i]
        if byte != 0x26:  # "&"
            if not 0x20 <= byte <= 0x7E:
                raise ModUtf7Error("only printable US-ASCII outside a shifted sequence")
            parts.append(chr(byte))
            i += 1
            continue
        close = data.find(b"-", i + 1)
        if close < 0:
            raise ModUtf7Error("'&' without its closing '-'")
        parts.append("&" if close == i + 1 else _modified_b64decode(data[i + 1 : close]))
        i = close + 1
    return "".join(parts)
