from __future__ import annotations

from .. import Params, Parseable
from ..exceptions import InvalidMailboxName
from ..modutf7 import ModUtf7Error, modutf7_decode, modutf7_encode
from . import AString

__all__ = ["Mailbox", "decode_name", "decode_pattern"]


class Mailbox(Parseable[str]):
    """Represents a mailbox data object from an IMAP stream.

    Args:
        mailbox: The mailbox name.

    """

    def __init__(self, mailbox: str) -> None:
        super().__init__()
        if mailbox.upper() == "INBOX":
            self.mailbox = "INBOX"
            self._raw: bytes | None = b"INBOX"
        else:
            self.mailbox = mailbox
            self._raw = None

    @property
    def value(self) -> str:
        """The mailbox name."""
        return self.mailbox

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[Mailbox, memoryview]:
        atom, buf = AString.parse(buf, params)
        mailbox = atom.value
        if mailbox.upper() == b"INBOX":
            return cls("INBOX"), buf
        return cls(decode_name(mailbox)), buf

    def __bytes__(self) -> bytes:
        if self._raw is not None:
            return self._raw
        self._raw = raw = bytes(AString(modutf7_encode(self.value)))
        return raw

    def __str__(self) -> str:
        return self.value


def decode_name(raw: bytes) -> str:
    """A mailbox name or pattern from modified UTF-7; `InvalidMailboxName` if it is not."""
    try:
        return modutf7_decode(raw)
    except ModUtf7Error as exc:
        raise InvalidMailboxName(memoryview(raw), b"CANNOT") from exc


def decode_pattern(raw: bytes) -> str:
    """A LIST/LSUB pattern: modified UTF-7 if it is, else its bytes as they are (Dovecot
    answers such a LIST with OK and whatever matches, which is usually nothing)."""
    try:
        return modutf7_decode(raw)
    except ModUtf7Error:
        return raw.decode("latin-1")
