"""pymap's backend on the sitemail mailbox store: folders, messages, flags, UIDs in the database.

One job: implement pymap's mailbox interfaces (`MailboxDataInterface`, `MailboxSetInterface`,
its session, login and identity) over `sitemail.mailbox`, so pymap speaks IMAP and we keep the
data. Collaborators: the `Store` (every SQL statement runs in a worker thread, one transaction
per operation), the `Authenticator` (logins), `ImapConfig`.

Invariants and choices:
- UIDVALIDITY and UIDs come from the store (`mail_folder.uidvalidity`, `uidnext`), so they
  survive restarts; a UID is never reused in a folder.
- One `FolderData` per folder per process (the `FolderRegistry`) keeps the folder's message
  metadata (UID, flags, date, size) in memory; contents are read from the database only when a
  command needs them, in batches (`_ContentBatch`): FETCH of 10,000 headers is a few dozen
  queries, not 10,000.
- Changes made through this process (APPEND, STORE, COPY/MOVE, EXPUNGE) update the in-memory
  state after their transaction commits and wake idle sessions at once. Changes made elsewhere
  (local delivery, POP3) are seen through a cheap probe, (uidnext, message count), taken at
  every command and every `idle_poll` seconds while a client idles: a delivery shows up in an
  idle client within that time.
- Whole-set operations (STORE, FETCH that sets \\Seen, COPY, MOVE, EXPUNGE) are one transaction
  each, not one per message.
- CONDSTORE (RFC 7162): the store raises a folder's HIGHESTMODSEQ by one on every change and
  gives changed messages that value (`mail_message.modseq`); the probe includes it, so flags
  changed by another process are seen like arrivals. Each write here raises it by exactly
  one, so the known mark follows our own writes without a query and still differs from the
  database after anyone else's. STORE UNCHANGEDSINCE reads the modseqs again inside its
  write transaction.
- `\\Recent` is a session flag kept in memory (RFC 3501 allows it): after a restart no message
  is recent.
- PERMANENTFLAGS include `\\*`: clients may create keywords ($Junk, $Label1...).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import re
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Sequence,
)
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pysasl.creds.server import ServerCredentials
from pysasl.hashing import HashInterface
from pysasl.identity import Identity as SaslIdentity
from sqlalchemy import Connection

from sitemail.config.model import ImapConfig
from sitemail.core.clock import Clock
from sitemail.directory.auth import Authenticates, AuthOutcome, AuthResult
from sitemail.imap.pymap.backend.session import BaseSession
from sitemail.imap.pymap.bytes import Writeable
from sitemail.imap.pymap.concurrent import Event
from sitemail.imap.pymap.config import BackendCapability, IMAPConfig
from sitemail.imap.pymap.context import subsystem
from sitemail.imap.pymap.exceptions import (
    InvalidAuth,
    MailboxNotFound,
    MailboxReadOnly,
    NotAllowedError,
    NotSupportedError,
)
from sitemail.imap.pymap.flags import FlagOp
from sitemail.imap.pymap.interfaces.login import IdentityInterface, LoginInterface
from sitemail.imap.pymap.interfaces.message import CachedMessage
from sitemail.imap.pymap.listtree import ListEntry, ListTree
from sitemail.imap.pymap.mailbox import MailboxSnapshot
from sitemail.imap.pymap.message import BaseLoadedMessage, BaseMessage
from sitemail.imap.pymap.mime import MessageContent
from sitemail.imap.pymap.mime.sevenbit import seven_bit
from sitemail.imap.pymap.parsing.message import AppendMessage
from sitemail.imap.pymap.parsing.response import ResponseCode, ResponseNo
from sitemail.imap.pymap.parsing.response.code import CopyUid
from sitemail.imap.pymap.parsing.specials import FetchRequirement, ObjectId, SearchKey, SequenceSet
from sitemail.imap.pymap.parsing.specials.flag import (
    Deleted,
    Flag,
    Recent,
    Seen,
    Wildcard,
    get_system_flags,
)
from sitemail.imap.pymap.search import SearchCriteriaSet, SearchParams
from sitemail.imap.pymap.selected import SelectedMailbox, SelectedSet
from sitemail.imap.pymap.token import AllTokens
from sitemail.imap.pymap.user import UserMetadata
from sitemail.mailbox import (
    DEFAULT_FOLDERS,
    FolderState,
    Mark,
    MessageMeta,
    append_to_folder,
    copy_messages,
    create_folder,
    delete_folder,
    delete_messages,
    ensure_folders,
    folder_mark,
    folder_marks,
    folder_names,
    folder_state,
    get_folder,
    load_contents,
    message_modseqs,
    rename_folder,
    set_flags,
    set_subscribed,
)
from sitemail.store import Store

T = TypeVar("T")

__all__ = ["BackendConfig", "FolderRegistry", "Login", "peer_ip"]

#: The client's IP address, set by the listener for each connection (lock-out key).
peer_ip: ContextVar[str] = ContextVar("sitemail_imap_peer_ip", default="")

# Each batch is one hop to a worker thread and back, and on a loaded machine a hop waits for
# the scheduler: FETCH 1:10000 spent more time in those hand-offs at 200 a batch than in the
# query. 800 keeps the query under SQLite's oldest limit of 999 parameters.
_BATCH_MESSAGES = 800
_BATCH_BYTES = 8 * 1024 * 1024
_SYSTEM_FLAGS = frozenset(get_system_flags() - {Recent})
_PERMANENT_FLAGS = _SYSTEM_FLAGS | {Wildcard}


def _flags_text(flags: Iterable[Flag]) -> str:
    return " ".join(sorted(str(f.value, "utf-8", "replace") for f in flags if f != Recent))


def _parse_flags(text: str) -> frozenset[Flag]:
    return frozenset(Flag(word.encode("utf-8")) for word in text.split())


class Message(BaseMessage):
    """A message's metadata; its content is loaded on demand through a batch loader."""

    __slots__ = ["_batch", "size"]

    def __init__(
        self,
        uid: int,
        internal_date: datetime,
        permanent_flags: Iterable[Flag],
        *,
        size: int,
        email_id: ObjectId,
        expunged: bool = False,
        batch: _ContentBatch | None = None,
        modseq: int = 0,
    ) -> None:
        super().__init__(
            uid,
            internal_date,
            permanent_flags,
            expunged=expunged,
            email_id=email_id,
            modseq=modseq,
        )
        self.size = size
        self._batch = batch

    def bound(self, batch: _ContentBatch | None, *, expunged: bool = False) -> Message:
        """This message for one command, its content loaded through `batch`: a copy of the
        slots (FETCH binds every message of the range; __init__ would rebuild each value)."""
        clone = Message.__new__(Message)
        clone.uid = self.uid  # type: ignore[misc]  # Final: set once, on a new object
        clone.internal_date = self.internal_date  # type: ignore[misc]
        clone.expunged = expunged  # type: ignore[misc]
        clone._email_id = self._email_id
        clone._thread_id = self._thread_id
        clone._permanent_flags = self._permanent_flags
        clone._flags_key = self._flags_key
        clone._modseq = self._modseq
        clone.size = self.size
        clone._batch = batch
        return clone

    async def load_content(self, requirement: FetchRequirement) -> BaseLoadedMessage:
        if self.expunged or requirement.has_none(FetchRequirement.CONTENT):
            return BaseLoadedMessage(self, requirement, None)
        batch = self._batch
        raw = await batch.content(self.uid) if batch is not None else None
        return _Loaded(self, requirement, raw)


_FIELD_START = re.compile(rb"^[^ \t\r\n]", re.MULTILINE)


class _Loaded(BaseLoadedMessage):
    """A message's content, MIME-parsed only when a command needs its structure.

    The whole message, its header (BODY[HEADER], RFC822.HEADER), chosen header fields
    (BODY[HEADER.FIELDS (...)]) and its size come straight from the stored octets: clients
    fetch these for every message of a folder, and pymap's full parse costs more than all the
    rest of such a FETCH together. ENVELOPE, BODYSTRUCTURE, parts and SEARCH parse as pymap does.
    """

    __slots__ = ["_raw"]

    def __init__(self, message: Message, requirement: FetchRequirement, raw: bytes | None) -> None:
        super().__init__(message, requirement, None)
        self._raw = raw

    @property
    def content(self) -> MessageContent:
        if self._content is None and self._raw is not None:
            self._content = MessageContent.parse(self._raw)
        return super().content

    def _header(self) -> bytes | None:
        raw = self._raw
        if raw is None:
            return None
        end = raw.find(b"\r\n\r\n")
        # a bare LF in the header (more LFs than CRLFs), counted without copying the header
        if end < 0 or raw.count(b"\n", 0, end) != raw.count(b"\r\n", 0, end):
            return None  # no CRLF-delimited header: let pymap's parser decide
        return raw[: end + 4]

    def get_message_headers(
        self,
        section: Sequence[int] | None = None,
        subset: Collection[bytes] | None = None,
        inverse: bool = False,
    ) -> Writeable:
        header = None if section else self._header()
        if header is None:
            return super().get_message_headers(section, subset, inverse)
        if subset is None:
            return Writeable.wrap(header)
        fields = header[:-2]
        starts = [m.start() for m in _FIELD_START.finditer(fields)]
        chosen = []
        ends = [*starts[1:], len(fields)] if starts else []  # no field at all: none chosen
        for begin, end in zip(starts, ends, strict=True):
            field = fields[begin:end]
            name = field.split(b":", 1)[0].strip().upper()
            if inverse != (name in subset):
                chosen.append(field)
        return Writeable.wrap(b"".join(chosen) + b"\r\n")

    def get_body(self, section: Sequence[int] | None = None, binary: bool = False) -> Writeable:
        if not section and not binary and self._raw is not None:
            return Writeable.wrap(self._raw)
        return super().get_body(section, binary)

    def get_size(self, section: Sequence[int] | None = None) -> int:
        if not section and self._raw is not None:
            return len(self._raw)
        return super().get_size(section)


class _ContentBatch:
    """Loads the contents of the messages one command touches, many per query, in order."""

    def __init__(self, folder: FolderData, uids: Sequence[int]) -> None:
        self._folder = folder
        self._order = list(uids)
        self._index = {uid: i for i, uid in enumerate(self._order)}
        self._loaded: dict[int, bytes] = {}

    async def content(self, uid: int) -> bytes | None:
        found = self._loaded.pop(uid, None)
        if found is not None:
            return found
        start = self._index.get(uid)
        wanted = [uid] if start is None else self._chunk(start)
        loaded = await self._folder.load(wanted)
        found = loaded.pop(uid, None)
        self._loaded = loaded  # what is left belongs to the next messages of this command
        return found

    def _chunk(self, start: int) -> list[int]:
        chunk: list[int] = []
        total = 0
        for uid in self._order[start:]:
            meta = self._folder.cached(uid)
            chunk.append(uid)
            total += meta.size if meta is not None else 0
            if len(chunk) >= _BATCH_MESSAGES or total >= _BATCH_BYTES:
                break
        return chunk


def _mailbox_id(owner: str, folder_id: int, uidvalidity: int) -> ObjectId:
    digest = hashlib.sha256(f"{owner}/{folder_id}/{uidvalidity}".encode()).digest()[:16]
    return ObjectId.new_mailbox_id(digest)


class FolderData:
    """One folder of one mailbox, shared by every session of this process that opens it."""

    def __init__(self, registry: FolderRegistry, owner: str, state: FolderState) -> None:
        info = state.folder
        self._registry = registry
        self._store = registry.store
        self.owner = owner
        self.folder_id = info.id
        self.name = info.name
        self._uid_validity = info.uidvalidity
        self._mailbox_id = _mailbox_id(owner, info.id, info.uidvalidity)
        self._selected_set = SelectedSet()
        self._updated: Event = subsystem.get().new_event()
        self._lock = asyncio.Lock()
        self._messages: dict[int, Message] = {}
        self._uidnext = 1
        self._mark: Mark = (0, 0, 0)
        self._version = 0
        self._recent_claimed = 0
        self._apply_state(state)
        self._recent_claimed = self._uidnext - 1  # nothing is recent at first sight

    # -- pymap's MailboxDataInterface -----------------------------------------------------------

    @property
    def mailbox_id(self) -> ObjectId:
        return self._mailbox_id

    @property
    def readonly(self) -> bool:
        return False

    @property
    def uid_validity(self) -> int:
        return self._uid_validity

    @property
    def permanent_flags(self) -> frozenset[Flag]:
        return _PERMANENT_FLAGS

    @property
    def session_flags(self) -> frozenset[Flag]:
        return frozenset({Recent})

    @property
    def selected_set(self) -> SelectedSet:
        return self._selected_set

    async def update_selected(
        self, selected: SelectedMailbox, *, wait_on: Event | None = None
    ) -> SelectedMailbox:
        if wait_on is not None:
            await self._wait(wait_on, selected)
        else:
            await self.refresh()
        if selected.mod_sequence != self._version:
            new = [uid for uid in self._messages if uid > self._recent_claimed]
            if new and not selected.readonly:
                for uid in new:
                    selected.session_flags.add_recent(uid)
                self._recent_claimed = max(new)
            selected.set_messages(list(self._messages.values()))
            selected.mod_sequence = self._version
        elif not selected.hide_expunged:
            selected.add_updates([], ())  # expunges held back during a FETCH or STORE
        selected.highest_modseq = self.highest_modseq
        return selected

    async def _wait(self, wait_on: Event, selected: SelectedMailbox) -> None:
        """IDLE: until the client is done or this folder changes (here, or as the registry's
        shared probe of idle folders sees it)."""
        either = wait_on.or_event(self._updated)
        poll = self._registry.settings.idle_poll
        self._registry.watch(self)
        try:
            while not wait_on.is_set() and selected.mod_sequence == self._version:
                if self._updated.is_set():
                    self._updated.clear()  # a change this session has already seen
                with contextlib.suppress(TimeoutError):
                    await either.wait(timeout=poll)
        finally:
            self._registry.unwatch(self)

    async def append(self, append_msg: AppendMessage, *, recent: bool = False) -> Message:
        when = append_msg.when or datetime.now(UTC)
        flags = append_msg.flag_set - {Recent}
        literal = seven_bit(append_msg.literal)  # NUL-bearing parts stored as base64
        now = when.timestamp()

        async with self._lock:
            uid = await _write(
                self._store,
                lambda conn: append_to_folder(
                    conn, self.folder_id, literal, now=now, flags=_flags_text(flags)
                ),
            )
            meta = MessageMeta(uid, now, len(literal), _flags_text(flags), self.highest_modseq + 1)
            message = self._message(meta)
            self._add(message, arrived=1)
            if not recent:
                self._recent_claimed = max(self._recent_claimed, uid)
        return message

    async def copy(self, uid: int, destination: FolderData, *, recent: bool = False) -> int | None:
        pairs = await self.copy_many([uid], destination)
        return pairs[0][1] if pairs else None

    async def move(self, uid: int, destination: FolderData, *, recent: bool = False) -> int | None:
        pairs = await self.move_many([uid], destination)
        return pairs[0][1] if pairs else None

    async def get(self, uid: int, cached_msg: CachedMessage) -> Message:
        message = self._messages.get(uid)
        if message is None:
            if uid < 1 or uid >= self._uidnext:
                raise IndexError(uid)
            return Message(
                uid,
                cached_msg.internal_date,
                cached_msg.permanent_flags,
                size=0,
                email_id=cached_msg.email_id,
                expunged=True,
                modseq=cached_msg.modseq,
            )
        return message.bound(_ContentBatch(self, [uid]))

    async def update(
        self, uid: int, cached_msg: CachedMessage, flag_set: frozenset[Flag], mode: FlagOp
    ) -> Message:
        updated = await self.update_many([uid], flag_set, mode)
        if updated:
            return updated[0]
        return await self.get(uid, cached_msg)

    async def delete(self, uids: Iterable[int]) -> None:
        wanted = [uid for uid in uids if uid in self._messages]
        if not wanted:
            return

        async with self._lock:
            await _write(self._store, lambda conn: delete_messages(conn, self.folder_id, wanted))
            for uid in wanted:
                self._messages.pop(uid, None)
            self._changed(arrived=0, left=len(wanted))

    async def claim_recent(self, selected: SelectedMailbox) -> None:
        await self.refresh()
        for uid in self._messages:
            if uid > self._recent_claimed:
                selected.session_flags.add_recent(uid)
        self._recent_claimed = self._uidnext - 1

    async def cleanup(self) -> None:
        return None

    async def snapshot(self) -> MailboxSnapshot:
        await self.refresh()
        exists = recent = unseen = 0
        first_unseen: int | None = None
        flag_sets: set[frozenset[Flag]] = set()  # few distinct sets, however many messages
        for seq, message in enumerate(self._messages.values(), 1):
            exists += 1
            flag_sets.add(message.permanent_flags)
            if message.uid > self._recent_claimed:
                recent += 1
            if Seen not in message.permanent_flags:
                unseen += 1
                if first_unseen is None:
                    first_unseen = seq
        return MailboxSnapshot(
            self.mailbox_id,
            self.readonly,
            self.uid_validity,
            self.permanent_flags,
            self.session_flags,
            exists,
            recent,
            unseen,
            first_unseen,
            self._uidnext,
            keywords=frozenset().union(*flag_sets) - _SYSTEM_FLAGS,
            highest_modseq=self.highest_modseq,
        )

    async def messages(self) -> AsyncIterable[Message]:
        for message in list(self._messages.values()):
            yield message

    async def find(
        self, seq_set: SequenceSet, selected: SelectedMailbox
    ) -> AsyncIterable[tuple[int, Message]]:
        found = selected.messages.get_all(seq_set)
        batch = _ContentBatch(self, [cached.uid for _, cached in found])
        for seq, cached in found:
            message = self._messages.get(cached.uid)
            if message is not None:
                yield seq, message.bound(batch)

    async def find_deleted(self, seq_set: SequenceSet, selected: SelectedMailbox) -> Sequence[int]:
        session_flags = selected.session_flags
        return [
            message.uid
            async for _, message in self.find(seq_set, selected)
            if Deleted in message.get_flags(session_flags)
        ]

    # -- batch operations (one transaction per command) ---------------------------------------

    async def update_many(
        self, uids: Sequence[int], flag_set: frozenset[Flag], mode: FlagOp
    ) -> list[Message]:
        updated, _ = await self.store_flags(uids, flag_set, mode)
        return updated

    async def store_flags(
        self,
        uids: Sequence[int],
        flag_set: frozenset[Flag],
        mode: FlagOp,
        unchanged_since: int | None = None,
    ) -> tuple[list[Message], set[int]]:
        """STORE on the messages of `uids` still here: (those done, changed or not; UIDs left
        alone because their modseq in the database is above `unchanged_since`)."""
        async with self._lock:
            wanted: dict[int, frozenset[Flag]] = {}
            for uid in uids:
                message = self._messages.get(uid)
                if message is not None:
                    wanted[uid] = frozenset(mode.apply(message.permanent_flags, flag_set))
            changes = [
                (uid, _flags_text(flags))
                for uid, flags in wanted.items()
                if flags - {Recent} != self._messages[uid].permanent_flags
            ]

            def job(conn: Connection) -> tuple[set[int], int]:
                failed: set[int] = set()
                if unchanged_since is not None:
                    current = message_modseqs(conn, self.folder_id, list(wanted))
                    failed = {uid for uid, seq in current.items() if seq > unchanged_since}
                passed = [(uid, text) for uid, text in changes if uid not in failed]
                return failed, set_flags(conn, self.folder_id, passed)

            failed, modseq = await _write(self._store, job) if wanted else (set(), 0)
            updated: list[Message] = []
            for uid, flags in wanted.items():
                message = self._messages[uid]
                if uid in failed:
                    continue
                if modseq and flags - {Recent} != message.permanent_flags:
                    message = message.bound(None)
                    message.permanent_flags = flags - {Recent}
                    message.modseq = modseq
                    self._messages[uid] = message
                updated.append(message)
            if modseq:
                self._changed()
        return updated, failed

    async def copy_many(
        self, uids: Sequence[int], destination: FolderData
    ) -> list[tuple[int, int]]:
        return await self._transfer(uids, destination, move=False)

    async def move_many(
        self, uids: Sequence[int], destination: FolderData
    ) -> list[tuple[int, int]]:
        return await self._transfer(uids, destination, move=True)

    async def _transfer(
        self, uids: Sequence[int], destination: FolderData, *, move: bool
    ) -> list[tuple[int, int]]:
        """COPY or MOVE in one transaction; (source uid, destination uid) pairs."""
        wanted = [uid for uid in uids if uid in self._messages]
        if not wanted:
            return []

        def job(conn: Connection) -> list[tuple[int, int]]:
            pairs = copy_messages(conn, self.folder_id, wanted, destination.folder_id)
            if move:
                delete_messages(conn, self.folder_id, [source for source, _ in pairs])
            return pairs

        async with self._lock:
            pairs = await _write(self._store, job)
            if destination is self:  # MOVE/COPY to the selected folder: new UIDs here
                self.copied(pairs, self)
            if move:
                for source, _ in pairs:
                    self._messages.pop(source, None)
                self._changed(left=len(pairs))
        if destination is not self:
            destination.copied(pairs, self)
        return pairs

    def copied(self, pairs: Sequence[tuple[int, int]], source: FolderData) -> None:
        """Messages another folder copied here (already committed)."""
        if not pairs:
            return
        modseq = self.highest_modseq + 1
        for source_uid, uid in pairs:
            original = source.cached_message(source_uid)
            if original is None:
                continue
            self._messages[uid] = Message(
                uid,
                original.internal_date,
                original.permanent_flags,
                size=original.size,
                email_id=_email_id(self.folder_id, uid),
                modseq=modseq,
            )
            self._uidnext = max(self._uidnext, uid + 1)
        self._changed(arrived=len(pairs))

    # -- the database side ---------------------------------------------------------------------

    def cached(self, uid: int) -> Message | None:
        return self._messages.get(uid)

    def cached_message(self, uid: int) -> Message | None:
        return self._messages.get(uid)

    async def load(self, uids: Sequence[int]) -> dict[int, bytes]:
        return await _read(self._store, lambda conn: load_contents(conn, self.folder_id, uids))

    async def refresh(self) -> None:
        """Probe the folder; reload its metadata if mail arrived or left by another way."""
        mark = await _read(self._store, lambda conn: folder_mark(conn, self.folder_id))
        if mark is None:
            raise MailboxNotFound(self.name)
        if mark == self._mark:
            return

        async with self._lock:
            state = await _read(self._store, lambda conn: folder_state(conn, self.folder_id))
            if state is None:
                raise MailboxNotFound(self.name)
            self._apply_state(state)
            self._version += 1
            self._updated.set()

    @property
    def mark(self) -> Mark:
        """(uidnext, message count, highestmodseq) as this process last knew them."""
        return self._mark

    @property
    def highest_modseq(self) -> int:
        """The folder's HIGHESTMODSEQ as this process knows it (exact after a refresh)."""
        return self._mark[2]

    def _apply_state(self, state: FolderState) -> None:
        self._messages = {m.uid: self._message(m) for m in state.messages}
        self._uidnext = state.folder.uidnext
        self._mark = (state.folder.uidnext, len(state.messages), state.folder.highestmodseq)

    def _message(self, meta: MessageMeta) -> Message:
        return Message(
            meta.uid,
            datetime.fromtimestamp(meta.internal_date, UTC),
            _parse_flags(meta.flags),
            size=meta.size,
            email_id=_email_id(self.folder_id, meta.uid),
            modseq=meta.modseq,
        )

    def _add(self, message: Message, *, arrived: int) -> None:
        self._messages[message.uid] = message
        self._uidnext = max(self._uidnext, message.uid + 1)
        self._changed(arrived=arrived)

    def _changed(self, *, arrived: int = 0, left: int = 0) -> None:
        """After one write of ours: each raised HIGHESTMODSEQ by exactly one, so the mark
        stays equal to the database's unless someone else wrote too (then a refresh reloads)."""
        uidnext, count, modseq = self._mark
        self._mark = (max(uidnext, self._uidnext), count + arrived - left, modseq + 1)
        self._version += 1
        self._updated.set()


async def _write(store: Store, job: Callable[[Connection], T]) -> T:
    """`job(conn)` in one write transaction, in a worker thread (never in the event loop)."""

    def run() -> T:
        with store.write() as conn:
            return job(conn)

    return await asyncio.to_thread(run)


async def _read(store: Store, job: Callable[[Connection], T]) -> T:
    """`job(conn)` in one read transaction, in a worker thread."""

    def run() -> T:
        with store.read() as conn:
            return job(conn)

    return await asyncio.to_thread(run)


def _email_id(folder_id: int, uid: int) -> ObjectId:
    return ObjectId.new_email_id(hashlib.sha256(f"{folder_id}/{uid}".encode()).digest()[:16])


@dataclass(frozen=True, slots=True)
class _Entry:
    """A LIST entry with the folder's RFC 6154 special-use attribute added."""

    name: str
    attributes: Sequence[bytes]
    exists: bool


class _SpecialUseTree(ListTree):
    def __init__(self, delimiter: str, special: dict[str, str]) -> None:
        super().__init__(delimiter)
        self._special = special

    def list_matching(self, ref_name: str, filter_: str) -> Iterable[ListEntry]:
        for entry in super().list_matching(ref_name, filter_):
            use = self._special.get(entry.name, "").lstrip("\\")
            attributes = [*entry.attributes, use.encode("ascii")] if use else entry.attributes
            yield _Entry(entry.name, attributes, entry.exists)  # type: ignore[misc]  # duck-typed entry


class FolderSet:
    """The folders of one mailbox (pymap's MailboxSetInterface)."""

    def __init__(self, registry: FolderRegistry, owner: str) -> None:
        self._registry = registry
        self._store = registry.store
        self._owner = owner

    @property
    def delimiter(self) -> str:
        return "/"

    async def _names(self) -> list[tuple[str, str, bool]]:
        return await _read(self._store, lambda conn: folder_names(conn, self._owner))

    async def set_subscribed(self, name: str, subscribed: bool) -> None:
        await _write(self._store, lambda conn: set_subscribed(conn, self._owner, name, subscribed))

    async def list_subscribed(self) -> ListTree:
        names = await self._names()
        special = {n: s for n, s, _ in names}
        return _SpecialUseTree(self.delimiter, special).update(
            "INBOX", *[n for n, _, sub in names if sub]
        )

    async def list_mailboxes(self) -> ListTree:
        names = await self._names()
        special = {n: s for n, s, _ in names}
        return _SpecialUseTree(self.delimiter, special).update("INBOX", *special)

    async def get_mailbox(self, name: str) -> FolderData:
        return await self._registry.folder(self._owner, name)

    async def add_mailbox(self, name: str, *, special_use: str = "") -> ObjectId:
        # "a/b/" asks for a future parent (RFC 3501 6.3.3): the name is "a/b"
        name = name.removesuffix(self.delimiter)
        if not name or len(name) > 255 or any(ord(c) < 32 for c in name):
            raise NotAllowedError("folder names are 1-255 printable characters")
        if "" in name.split(self.delimiter):
            raise NotAllowedError("folder names have no empty level")
        now = self._registry.clock.now()

        info = await _write(
            self._store,
            lambda conn: create_folder(conn, self._owner, name, now=now, special_use=special_use),
        )
        return _mailbox_id(self._owner, info.id, info.uidvalidity)

    async def delete_mailbox(self, name: str) -> None:
        if name.upper() == "INBOX":
            raise NotAllowedError("INBOX cannot be deleted")

        await _write(self._store, lambda conn: delete_folder(conn, self._owner, name))
        self._registry.forget(self._owner, name)

    async def rename_mailbox(self, before: str, after: str) -> None:
        if before.upper() == "INBOX":
            raise NotSupportedError("renaming INBOX is not supported: move its messages instead")
        names = [n for n, _, _ in await self._names()]
        tree = ListTree(self.delimiter).update("INBOX", *names)
        if tree.get(before) is None:
            raise KeyError(before)
        if tree.get(after) is not None:
            raise ValueError(after)
        renames = [(b, a) for b, a in tree.get_renames(before, after) if b in names]

        await _write(self._store, lambda conn: rename_folder(conn, self._owner, renames))
        for old, _ in renames:
            self._registry.forget(self._owner, old)


class FolderRegistry:
    """Every open folder of this process, so sessions share state and see each other's work."""

    def __init__(self, store: Store, clock: Clock, settings: ImapConfig) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self._folders: dict[tuple[str, str], FolderData] = {}
        self._watched: dict[FolderData, int] = {}  # folders with idling clients: how many
        self._poller: asyncio.Task[None] | None = None

    async def folder(self, owner: str, name: str) -> FolderData:
        key_name = "INBOX" if name.upper() == "INBOX" else name
        found = self._folders.get((owner, key_name))
        if found is not None:
            return found
        now = self.clock.now()

        def run() -> FolderState | None:
            with self.store.write() as conn:
                if key_name == "INBOX":
                    ensure_folders(conn, owner, now)
                info = get_folder(conn, owner, key_name)
                return None if info is None else folder_state(conn, info.id)

        state = await asyncio.to_thread(run)
        if state is None:
            raise KeyError(name)
        found = self._folders.get((owner, key_name))  # another session may have won the race
        if found is None:
            found = FolderData(self, owner, state)
            self._folders[(owner, key_name)] = found
        return found

    async def prepare(self, owner: str) -> None:
        """At login: the standard folders exist (a mailbox that never got mail has none)."""
        now = self.clock.now()

        def run() -> None:
            with self.store.read() as conn:
                present = {name for name, _, _ in folder_names(conn, owner)}
            if any(name not in present for name, _ in DEFAULT_FOLDERS):
                with self.store.write() as conn:
                    ensure_folders(conn, owner, now)

        await asyncio.to_thread(run)

    def watch(self, folder: FolderData) -> None:
        """A client idles on `folder`: include it in the shared probe (started if needed)."""
        self._watched[folder] = self._watched.get(folder, 0) + 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(
                self._poll(), name="imap-idle-probe"
            )

    def unwatch(self, folder: FolderData) -> None:
        left = self._watched.get(folder, 0) - 1
        if left > 0:
            self._watched[folder] = left
        else:
            self._watched.pop(folder, None)

    async def _poll(self) -> None:
        """One query per `idle_poll` for every idle folder of the process, however many
        clients idle: folders whose (uidnext, count) moved are reloaded, which wakes their
        idlers. Ends when nobody idles."""
        while self._watched:
            await asyncio.sleep(self.settings.idle_poll)
            folders = list(self._watched)
            probe = functools.partial(folder_marks, folder_ids=[f.folder_id for f in folders])
            marks = await _read(self.store, probe)
            for folder in folders:
                if marks.get(folder.folder_id) != folder.mark:
                    with contextlib.suppress(MailboxNotFound):
                        await folder.refresh()

    async def stop(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)

    def forget(self, owner: str, name: str) -> None:
        self._folders.pop((owner, name), None)


class Session(BaseSession[Message]):
    """One logged-in IMAP session: pymap's BaseSession with batched set operations."""

    def __init__(self, owner: str, config: BackendConfig, folders: FolderSet) -> None:
        super().__init__(owner)
        self._config = config
        self._folders = folders

    @property
    def config(self) -> IMAPConfig:
        return self._config

    @property
    def mailbox_set(self) -> Any:  # FolderSet, structurally pymap's MailboxSetInterface
        return self._folders

    async def _folder(self, selected: SelectedMailbox) -> FolderData:
        try:
            return await self._folders.get_mailbox(selected.lookup)
        except KeyError as exc:
            raise MailboxNotFound(selected.lookup) from exc

    async def _target(self, name: str) -> FolderData:
        try:
            return await self._folders.get_mailbox(name)
        except KeyError as exc:
            raise MailboxNotFound(name, try_create=True) from exc

    async def fetch_messages(
        self, selected: SelectedMailbox, sequence_set: SequenceSet, set_seen: bool
    ) -> tuple[Iterable[tuple[int, Message]], SelectedMailbox]:
        folder = await self._folder(selected)
        found = selected.messages.get_all(sequence_set)
        if set_seen:
            await folder.update_many([c.uid for _, c in found], frozenset({Seen}), FlagOp.ADD)
        batch = _ContentBatch(folder, [c.uid for _, c in found])
        out: list[tuple[int, Message]] = []
        for seq, cached in found:
            message = folder.cached(cached.uid)
            if message is None:
                out.append((seq, (await folder.get(cached.uid, cached)).bound(None, expunged=True)))
            else:
                out.append((seq, message.bound(batch)))
        return out, await folder.update_selected(selected)

    async def search_mailbox(
        self, selected: SelectedMailbox, keys: frozenset[SearchKey]
    ) -> tuple[Iterable[tuple[int, Message]], SelectedMailbox]:
        folder = await self._folder(selected)
        requirement = FetchRequirement.reduce(key.requirement for key in keys)
        params = SearchParams(selected, disabled=self.config.disable_search_keys)
        search = SearchCriteriaSet(keys, params)
        out: list[tuple[int, Message]] = []
        async for seq, message in folder.find(search.sequence_set, selected):
            content = await message.load_content(requirement)
            if search.matches(seq, message, content):
                out.append((seq, message))
        return out, await folder.update_selected(selected)

    async def update_flags(
        self,
        selected: SelectedMailbox,
        sequence_set: SequenceSet,
        flag_set: frozenset[Flag],
        mode: FlagOp = FlagOp.REPLACE,
        *,
        unchanged_since: int | None = None,
    ) -> tuple[Iterable[tuple[int, Message]], SelectedMailbox]:
        if selected.readonly:
            raise MailboxReadOnly()
        folder = await self._folder(selected)
        found = selected.messages.get_all(sequence_set)
        permanent = selected.permanent_flags & flag_set
        done, failed = await folder.store_flags(
            [c.uid for _, c in found], permanent, mode, unchanged_since
        )
        updated = {m.uid: m for m in done}
        out: list[tuple[int, Message]] = []
        for seq, cached in found:
            if cached.uid in failed:
                continue  # UNCHANGEDSINCE: left out, reported MODIFIED
            message = updated.get(cached.uid)
            if message is None:
                message = await folder.get(cached.uid, cached)
            else:
                selected.session_flags.update(cached.uid, flag_set, mode)
            out.append((seq, message))
        return out, await folder.update_selected(selected)

    async def copy_messages(
        self, selected: SelectedMailbox, sequence_set: SequenceSet, mailbox: str
    ) -> tuple[CopyUid | None, SelectedMailbox]:
        folder = await self._folder(selected)
        target = await self._target(mailbox)
        uids = [uid for _, uid in selected.messages.get_uids(sequence_set)]
        pairs = await folder.copy_many(uids, target)
        copy_uid = CopyUid(target.uid_validity, pairs) if pairs else None
        return copy_uid, await folder.update_selected(selected)

    async def move_messages(
        self, selected: SelectedMailbox, sequence_set: SequenceSet, mailbox: str
    ) -> tuple[CopyUid | None, SelectedMailbox]:
        folder = await self._folder(selected)
        target = await self._target(mailbox)
        # MOVE to the selected mailbox itself is allowed (RFC 6851): the messages get new
        # UIDs there, as Dovecot does, and the old ones are expunged.
        uids = [uid for _, uid in selected.messages.get_uids(sequence_set)]
        pairs = await folder.move_many(uids, target)
        copy_uid = CopyUid(target.uid_validity, pairs) if pairs else None
        return copy_uid, await folder.update_selected(selected)


class BackendConfig(IMAPConfig):
    """pymap's configuration object, built from ours (pymap wants an argparse Namespace)."""

    def __init__(self, args: Any, *, greeting_host: str, **extra: Any) -> None:
        super().__init__(args, **extra)
        self._greeting_host = greeting_host

    @property
    def backend_capability(self) -> BackendCapability:
        return BackendCapability(
            idle=True,
            object_id=True,
            multi_append=True,
            custom=[b"SPECIAL-USE", b"CREATE-SPECIAL-USE", b"ENABLE", b"CONDSTORE", b"ESEARCH"],
        )

    @property
    def greeting(self) -> bytes:
        return f"{self._greeting_host} IMAP4rev1 sitemail ready".encode("ascii", "replace")


class _Capture(SaslIdentity):
    """Takes the password out of pysasl credentials (they have no accessor for it)."""

    def __init__(self) -> None:
        self.secret = ""

    @property
    def authcid(self) -> str:
        return ""

    def compare_authcid(self, authcid: str) -> bool:
        del authcid
        return True

    def compare_secret(self, secret: str) -> bool:
        self.secret = secret
        return True

    def get_clear_secret(self) -> str | None:
        return None

    @property
    def hash(self) -> HashInterface | None:  # pragma: no cover - not used by pysasl here
        return None


class _Referral(InvalidAuth):
    """A mailbox of another site: `NO [REFERRAL imap://host/]` (RFC 2221 login referral),
    with a text naming the site and host for clients that do not follow referrals."""

    def __init__(self, text: str, host: str) -> None:
        super().__init__(text)
        self._host = host

    def get_response(self, tag: bytes) -> ResponseNo:
        url = f"REFERRAL imap://{self._host}/".encode("ascii", "replace")
        return ResponseNo(tag, self._raw, ResponseCode.of(url))


class Identity(IdentityInterface):
    """A logged-in mailbox."""

    def __init__(self, result: AuthResult, login: Login) -> None:
        self._result = result
        self._login = login

    @property
    def name(self) -> str:
        return self._result.mailbox

    @property
    def roles(self) -> frozenset[str]:
        return frozenset()

    @asynccontextmanager
    async def new_session(self) -> AsyncIterator[Session]:
        login = self._login
        await login.registry.prepare(self.name)
        yield Session(self.name, login.config, FolderSet(login.registry, self.name))

    async def new_token(self, *, expiration: datetime | None = None) -> str | None:
        del expiration
        return None

    async def get(self) -> UserMetadata:
        return UserMetadata(self._login.config, self.name)

    async def set(self, metadata: UserMetadata) -> int | None:
        raise NotAllowedError("accounts are managed with the sitemail command")

    async def delete(self) -> None:
        raise NotAllowedError("accounts are managed with the sitemail command")


class Login(LoginInterface):
    """LOGIN and AUTHENTICATE: the sitemail `Authenticator` decides."""

    def __init__(
        self, config: BackendConfig, registry: FolderRegistry, authenticator: Authenticates
    ) -> None:
        self.config = config
        self.registry = registry
        self._authenticator = authenticator
        self._tokens = AllTokens(config)

    @property
    def tokens(self) -> AllTokens:
        return self._tokens

    async def authenticate(self, credentials: ServerCredentials) -> Identity:
        capture = _Capture()
        credentials.verify(capture)
        result = await self._authenticator.authenticate(
            credentials.authcid, capture.secret, peer_ip.get()
        )
        if result.outcome is AuthOutcome.OK:
            return Identity(result, self)
        if result.outcome is AuthOutcome.ELSEWHERE:
            raise _Referral(result.text, result.home_host)
        raise InvalidAuth(result.text)

    async def authorize(self, authenticated: IdentityInterface, authzid: str) -> Identity:
        if not isinstance(authenticated, Identity):
            raise InvalidAuth()
        result = authenticated._result
        if authzid and authzid != credentials_name(result, authzid):
            raise InvalidAuth("authorization as another user is not allowed")
        return authenticated


def credentials_name(result: AuthResult, authzid: str) -> str:
    """An authzid is accepted when it names the same mailbox (an address of it, or its alias)."""
    wanted = authzid.strip().lower()
    if wanted in result.addresses or wanted == result.alias.lower() or wanted == result.mailbox:
        return authzid
    return ""
