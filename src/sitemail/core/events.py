"""The catalogue of typed events: what the server tells its operators, each defined once.

One job: define every event the server reports (a module, a name, typed fields and a level,
the kind of catalogue Stalwart's events or Postfix's log lines give admins) and carry each one
emitted to its readers. From this one definition come:
- the log line, as text (`queue.deferred queue_id=... nexthop="relay 192.0.2.7:25" ...`,
  read back by `parse_text`) or as one JSON object per line, as `[log] format` says
  (`LogFormatter`);
- the tracking log's event names (`queue.deferred`'s name is the tracking event `deferred`);
- the metrics: whoever listens (`listening`, the server's Prometheus counters in web/metrics.py)
  gets every event emitted in its context, whatever the log level.

Listeners are held in a context variable, not a global list: several servers in one process
(the tests' organisations) each count only their own events, since every task a server starts
inherits its context. An event is emitted once what it reports is true: after the commit that
records it, never from inside a transaction that may run again.

`docs/events.md` documents every event (a unit test holds the two together).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

__all__ = [
    "CATALOGUE",
    "AuthFailed",
    "Event",
    "LogFormatter",
    "QueueBounced",
    "QueueDeferred",
    "QueueDelivered",
    "QueueDsn",
    "QueueExpired",
    "QueueFlushed",
    "QueueRelayed",
    "ReplicationApplied",
    "ReplicationSent",
    "SmtpAccepted",
    "SmtpConnected",
    "SmtpOut",
    "SmtpOutSessionFailed",
    "catalogued",
    "emit",
    "listening",
    "parse_text",
    "render_text",
]

Field = str | int | float | bool
Listener = Callable[["Event"], None]
E = TypeVar("E", bound="type[Event]")

CATALOGUE: dict[str, type[Event]] = {}  # "module.name" -> its class, filled by @catalogued
_LISTENERS: ContextVar[tuple[Listener, ...]] = ContextVar("sitemail_event_listeners", default=())
_BARE = re.compile(r"[^\s\"=\\]+")
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')


class Event:
    """The base of every catalogued event: a frozen dataclass whose fields are its data."""

    module: ClassVar[str] = ""
    name: ClassVar[str] = ""
    level: ClassVar[int] = logging.INFO

    @classmethod
    def key(cls) -> str:
        return f"{cls.module}.{cls.name}"

    def fields(self) -> dict[str, Field]:
        out: dict[str, Field] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = getattr(self, f.name)
        return out


def catalogued(module: str, name: str, level: int = logging.INFO) -> Callable[[E], E]:
    """Enter a dataclass into the catalogue as `module.name`; a name is defined once."""

    def enter(cls: E) -> E:
        key = f"{module}.{name}"
        if key in CATALOGUE:
            raise ValueError(f"event {key} is defined twice")
        cls.module, cls.name, cls.level = module, name, level
        CATALOGUE[key] = cls
        return cls

    return enter


# -- the catalogue ------------------------------------------------------------------------
# Each class's docstring is what docs/events.md says of it.


@catalogued("smtp_in", "connected", logging.DEBUG)
@dataclass(frozen=True, slots=True)
class SmtpConnected(Event):
    """A client connected to an SMTP listener (25, 587 or 465)."""

    peer: str
    port: int


@catalogued("smtp_in", "accepted")
@dataclass(frozen=True, slots=True)
class SmtpAccepted(Event):
    """A message was committed to the queue and answered 250."""

    queue_id: str
    peer: str
    sender: str
    recipients: int
    size: int
    origin: str  # the sibling site that sent it (proven by its signed trace), else ""
    replication: bool = False  # for directory-service mailboxes only (signed in its body)


@catalogued("auth", "failed")
@dataclass(frozen=True, slots=True)
class AuthFailed(Event):
    """A login failed (wrong password, unknown user, locked out)."""

    protocol: str  # smtp, imap, pop3
    peer: str
    outcome: str


@catalogued("smtp_out", "result")
@dataclass(frozen=True, slots=True)
class SmtpOut(Event):
    """The next hop's answer for one recipient: delivered, deferred or failed."""

    queue_id: str
    recipient: str
    outcome: str
    relay: str
    status: str
    reply: str


@catalogued("smtp_out", "session_failed")
@dataclass(frozen=True, slots=True)
class SmtpOutSessionFailed(Event):
    """A connection to one of a next hop's hosts failed; the next host is tried."""

    queue_id: str
    host: str
    reason: str


@catalogued("queue", "delivered")
@dataclass(frozen=True, slots=True)
class QueueDelivered(Event):
    """A recipient was put in a mailbox of this site."""

    queue_id: str
    recipient: str


@catalogued("queue", "relayed")
@dataclass(frozen=True, slots=True)
class QueueRelayed(Event):
    """A recipient was handed to its next hop (another site, a domain route, an MX)."""

    queue_id: str
    recipient: str
    nexthop: str  # "site SiteB", "relay host:25", "mx example.org"


@catalogued("queue", "deferred")
@dataclass(frozen=True, slots=True)
class QueueDeferred(Event):
    """A recipient's attempt failed for now; it is retried later (or flushed)."""

    queue_id: str
    recipient: str
    nexthop: str
    status: str
    retry_in: float


@catalogued("queue", "bounced", logging.WARNING)
@dataclass(frozen=True, slots=True)
class QueueBounced(Event):
    """A recipient failed for good (5xx, routing reject, hop limit); a DSN follows."""

    queue_id: str
    recipient: str
    nexthop: str
    status: str
    reason: str


@catalogued("queue", "expired", logging.WARNING)
@dataclass(frozen=True, slots=True)
class QueueExpired(Event):
    """A recipient was deferred until the queue's expiry; a 4.4.7 DSN follows."""

    queue_id: str
    recipient: str
    nexthop: str


@catalogued("queue", "dsn")
@dataclass(frozen=True, slots=True)
class QueueDsn(Event):
    """A delivery status notification was queued to the sender."""

    queue_id: str
    kind: str  # failure, delay, success
    dsn_queue_id: str


@catalogued("queue", "flush")
@dataclass(frozen=True, slots=True)
class QueueFlushed(Event):
    """A next hop took a message: the mail deferred there became due at once."""

    nexthop: str
    recipients: int


@catalogued("replication", "sent")
@dataclass(frozen=True, slots=True)
class ReplicationSent(Event):
    """A signed replication message (request, answer, ping...) was queued to a partner."""

    peer: str
    kind: str
    seq: int


@catalogued("replication", "applied")
@dataclass(frozen=True, slots=True)
class ReplicationApplied(Event):
    """A partner's replication message was verified and applied (or answered)."""

    peer: str
    kind: str
    queue_id: str
    detail: str


# -- emitting -------------------------------------------------------------------------------


def emit(event: Event) -> None:
    """Log `event` on `sitemail.<module>` (if that level is on) and tell every listener."""
    logger = logging.getLogger(f"sitemail.{event.module}")
    if logger.isEnabledFor(event.level):
        logger.log(
            event.level, "%s", render_text(event), extra={"sitemail_event": event}, stacklevel=2
        )
    for listener in _LISTENERS.get():
        listener(event)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Within this context (and every task started in it): `listener` gets each event."""
    token = _LISTENERS.set((*_LISTENERS.get(), listener))
    try:
        yield
    finally:
        _LISTENERS.reset(token)


# -- log lines ------------------------------------------------------------------------------


def _quote(value: Field) -> str:
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


def render_text(event: Event) -> str:
    """`module.name key=value ...`: values with spaces, quotes or `=` JSON-quoted."""
    pairs = " ".join(f"{k}={_quote(v)}" for k, v in event.fields().items())
    return f"{event.key()} {pairs}".rstrip()


def _typed(kind: str, text: str) -> Field:
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        return text == "true"
    return text


def parse_text(line: str) -> Event:
    """The event of a text log line (or of its message alone); ValueError if it is none."""
    match = re.search(r"(?:^|\s)(\w+\.\w+)(?=\s|$)(.*)$", line)
    cls = CATALOGUE.get(match.group(1)) if match else None
    if match is None or cls is None:
        raise ValueError(f"not a catalogued event: {line!r}")
    raw = {k: json.loads(v) if v.startswith('"') else v for k, v in _PAIR.findall(match.group(2))}
    kinds = {f.name: str(f.type) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if set(raw) != set(kinds):
        raise ValueError(f"{cls.key()}: fields {sorted(raw)}, expected {sorted(kinds)}")
    return cls(**{k: _typed(kinds[k], v) for k, v in raw.items()})


class LogFormatter(logging.Formatter):
    """Text (`time LEVEL logger: message`) or JSON lines; a catalogued event's JSON has its
    key as `event` and each field as a member."""

    def __init__(self, *, as_json: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._json = as_json

    def format(self, record: logging.LogRecord) -> str:
        if not self._json:
            return super().format(record)
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
        }
        event = getattr(record, "sitemail_event", None)
        if isinstance(event, Event):
            out["event"] = event.key()
            out.update(event.fields())
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)
