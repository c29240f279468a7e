"""One hot spot of pymap 0.36.7 replaced by an equivalent that does not use typing Protocols.

pymap formats every piece of every response with `BytesFormat.__mod__`, which asks
`isinstance(x, SupportsIndex)` and `isinstance(x, SupportsBytes)`: runtime checks against
typing Protocols, which on Python 3.11 walk the protocol's attributes on every call. In a FETCH
of 10,000 headers they were a quarter of the server's time (bench/imap.py). The replacement
asks the same questions of the value's type directly (the protocols require exactly
`__index__` and `__bytes__`), so the results are the same (tests/unit/imap/test_speedups.py).

`apply()` is called when an IMAP service is built, never at import; it is idempotent. pymap is
pinned exactly (pyproject.toml), so the patched method is the one this was written against.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sitemail.imap.pymap.bytes import BytesFormat

__all__ = ["apply", "fast_mod"]

_ORIGINAL = BytesFormat.__mod__


def _formattable(value: object) -> bool:
    kind = type(value)
    return hasattr(kind, "__index__") or hasattr(kind, "__bytes__")


def fast_mod(self: BytesFormat, other: Any) -> bytes:
    """`BytesFormat.__mod__` with the same answers, without Protocol isinstance checks."""
    if _formattable(other):
        return self.format([other])
    if isinstance(other, Iterable):
        return self.format(other)
    raise NotImplementedError()


def apply() -> None:
    if BytesFormat.__mod__ is _ORIGINAL:
        BytesFormat.__mod__ = fast_mod  # type: ignore[method-assign]
