"""The pymap speed-up answers exactly as the method it replaces."""

from __future__ import annotations

from typing import Any

import pytest

from sitemail.imap import speedups
from sitemail.imap.pymap.bytes import BytesFormat
from sitemail.imap.pymap.parsing.primitives import Number, String


class _Bytes:
    def __bytes__(self) -> bytes:
        return b"custom"


@pytest.mark.parametrize(
    ("how", "value"),
    [
        (b"%b", b"raw"),
        (b"%i", 42),
        (b"%b", _Bytes()),
        (b"%b", Number(7)),
        (b"%b", String.build(b"quoted text")),
        (b"%b %b", (b"a", b"b")),
        (b"%b-%i", [b"x", 3]),
    ],
)
def test_fast_mod_formats_like_pymap(how: bytes, value: Any) -> None:
    """Same bytes for bytes, ints, __bytes__ objects, pymap primitives and sequences."""
    assert speedups.fast_mod(BytesFormat(how), value) == speedups._ORIGINAL(BytesFormat(how), value)


def test_fast_mod_refuses_what_pymap_refuses() -> None:
    """A value that is neither formattable nor iterable raises NotImplementedError in both."""
    for method in (speedups.fast_mod, speedups._ORIGINAL):
        with pytest.raises(NotImplementedError):
            method(BytesFormat(b"%b"), object())


def test_apply_is_idempotent() -> None:
    speedups.apply()
    speedups.apply()
    assert BytesFormat.__mod__ is speedups.fast_mod
