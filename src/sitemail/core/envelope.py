"""The SMTP envelope as a value, with the DSN parameters of RFC 3461.

What the server learnt in MAIL and RCPT travels with the message through the queue unchanged:
the reverse path (empty for the null sender), RET/ENVID, and per recipient NOTIFY and ORCPT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["BodyType", "Envelope", "EnvelopeRecipient", "Notify", "Ret"]


class Notify(StrEnum):
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELAY = "DELAY"
    NEVER = "NEVER"


class Ret(StrEnum):
    FULL = "FULL"
    HDRS = "HDRS"


class BodyType(StrEnum):
    SEVEN_BIT = "7BIT"
    EIGHT_BIT = "8BITMIME"


@dataclass(frozen=True, slots=True)
class EnvelopeRecipient:
    """One RCPT TO: the address, NOTIFY (empty = RFC 3461 default: FAILURE and DELAY), ORCPT."""

    address: str
    notify: frozenset[Notify] = frozenset()
    orcpt: str = ""  # "rfc822;user@example.com" as given (xtext decoded), or ""

    def wants(self, event: Notify) -> bool:
        """Whether a DSN for `event` should be sent to the sender for this recipient."""
        if Notify.NEVER in self.notify:
            return False
        if not self.notify:
            return event in (Notify.FAILURE, Notify.DELAY)
        return event in self.notify


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str  # "" is the null reverse-path <>
    recipients: tuple[EnvelopeRecipient, ...]
    ret: Ret | None = None
    envid: str = ""
    body: BodyType = BodyType.SEVEN_BIT
    smtputf8: bool = False
    client_address: str = ""
    client_name: str = ""  # HELO/EHLO argument
    authenticated_as: str = ""
    extra: dict[str, str] = field(default_factory=dict)
