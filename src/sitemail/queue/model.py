"""Queue values and the seam between the queue and its transports.

The queue never imports a transport: `site.py` registers objects satisfying `DeliveryAgent`
under a `routing.Transport` name. A transport receives one message and the recipients that
share a next hop, and answers one `RecipientResult` per recipient: 2xx delivered, 4xx try
again later, 5xx failed for that recipient only (a DSN follows). A transport whose whole work
is database writes (local delivery) is also a `TransactionalAgent`: the queue then runs it
inside its own write transaction, so the delivery, the queue's record of it and the dequeue
commit together, and many messages share one commit. The message comes as a `Content`:
bytes when small, a handle read in chunks when big (queue/content.py); a transport never
needs it whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, NewType, Protocol, runtime_checkable

from sqlalchemy import Connection

from sitemail.core.envelope import Envelope, EnvelopeRecipient
from sitemail.queue.content import Content
from sitemail.routing.route import Route

__all__ = [
    "Delivery",
    "DeliveryAgent",
    "Outcome",
    "QueueId",
    "QueuedMessage",
    "QueuedRecipient",
    "RcptState",
    "RecipientResult",
    "TransactionalAgent",
]

QueueId = NewType("QueueId", str)


class RcptState(StrEnum):
    QUEUED = "queued"
    DELIVERED = "delivered"  # final: delivered locally or accepted by the next hop
    FAILED = "failed"  # final: permanent failure or expiry; a DSN was queued if wanted


class Outcome(StrEnum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    id: int  # row id in queue_rcpt
    queue_id: QueueId
    recipient: EnvelopeRecipient
    attempts: int
    first_attempt_at: float | None
    delay_notified: bool


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    queue_id: QueueId
    envelope: Envelope
    received_at: float
    size: int
    message_id: str
    is_dsn: bool


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The outcome for one recipient, with the SMTP status that explains it."""

    rcpt_id: int
    outcome: Outcome
    code: int  # basic SMTP code (250, 451, 550...)
    status: str  # enhanced status "2.0.0", "4.4.1", "5.1.1"
    text: str  # diagnostic, e.g. the remote server's reply text
    remote_mta: str = ""  # the host that answered, for the DSN's Remote-MTA field
    already_recorded: bool = False  # the transport committed this result with its delivery


class DeliveryAgent(Protocol):
    """A transport: delivers one message to recipients that share a next hop."""

    async def deliver(
        self,
        message: QueuedMessage,
        content: Content,
        recipients: list[tuple[QueuedRecipient, Route]],
    ) -> list[RecipientResult]: ...


class Delivery(NamedTuple):
    """One message for a transactional transport, with the recipients it should take."""

    message: QueuedMessage
    content: Content
    recipients: list[tuple[QueuedRecipient, Route]]


@runtime_checkable
class TransactionalAgent(Protocol):
    """A transport that only writes to the database: it delivers in the caller's transaction,
    many messages at once, answering one list of results per message, in order."""

    def deliver_in(
        self, conn: Connection, batch: Sequence[Delivery]
    ) -> list[list[RecipientResult]]: ...
