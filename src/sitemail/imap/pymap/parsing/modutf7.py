"""Implements the modified UTF-7 specification used for encoding and decoding
mailbox names in IMAP.

See Also:
    `RFC 3501 5.1.3 <https://tools.ietf.org/html/rfc3501#section-5.1.3>`_

"""

from __future__ import annotations

__all__ = ["modutf7_decode", "modutf7_encode"]


def _modified_b64encode(src: str) -> bytes:
    # Inspired by Twisted Python's implementation:
    #   https://twistedmatrix.com/trac/browser/trunk/LICENSE
    src_utf7 = src.encode("utf-7")
    return src_utf7[1:-1].replace(b"/", b",")


def _modified_b64decode(src: bytes) -> str:
    # Inspired by Twisted Python's implementation:
    #   https://twistedmatrix.com/trac/browser/trunk/LICENSE
    src_utf7 = b"+%b-" % src.replace(b",", b"/")
    return src_utf7.decode("utf-7")


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
            ret.extend((0x2D, charpoint))
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

    Args:
        data: The encoded bytestring to decode.

    """
    parts = []
    is_usascii = True
    buf = memoryview(data)
    while buf:
        byte = buf[0]
        if is_usascii:
            if bytes(buf[0:2]) == b"&-":
                parts.append("&")
                buf = buf[2:]
            elif byte == 0x26:
                is_usascii = False
                buf = buf[1:]
            else:
                parts.append(chr(byte))
                buf = buf[1:]
        else:
            for i, byte in enumerate(buf):
                if byte == 0x2D:
                    to_decode = buf[:i].tobytes()
                    decoded = _modified_b64decode(to_decode)
                    parts.append(decoded)
                    buf = buf[i + 1 :]
                    is_usascii = True
                    break
    if not is_usascii:
        to_decode = buf.tobytes()
        decoded = _modified_b64decode(to_decode)
        parts.append(decoded)
    return "".join(parts)
