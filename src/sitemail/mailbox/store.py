"""The mailbox store: folders and messages with IMAP's UIDs, in the database.

One job: append a message to a mailbox folder (taking the next UID atomically) and read
folders back. Callers pass their open transaction, so delivery can commit the message and the
queue's record of it together. Every mailbox gets the standard folders on first use; UIDVALIDITY
is fixed when a folder is created and UIDs only grow, so clients' caches stay valid across
restarts. Every change to a folder (messages in, flags, expunge) raises its HIGHESTMODSEQ by
one in the same transaction and gives the changed messages that value (CONDSTORE, RFC 7162).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, bindparam, delete, func, insert, select, update

from sitemail.core.errors import NotFoundError
from sitemail.store import blobs
from sitemail.store.tables import mail_folder, mail_message, mail_uidvalidity

__all__ = [
    "DEFAULT_FOLDERS",
    "Append",
    "FolderInfo",
    "FolderState",
    "Mark",
    "MessageMeta",
    "StoredMessage",
    "append_message",
    "append_messages",
    "append_to_folder",
    "copy_messages",
    "create_folder",
    "delete_folder",
    "delete_messages",
    "ensure_folders",
    "folder_mark",
    "folder_marks",
    "folder_names",
    "folder_state",
    "get_folder",
    "list_folders",
    "list_messages",
    "load_contents",
    "message_modseqs",
    "next_modseq",
    "rename_folder",
    "set_flags",
    "set_subscribed",
]

# (name, RFC 6154 special-use attribute)
DEFAULT_FOLDERS = (
    ("INBOX", ""),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
)


@dataclass(frozen=True, slots=True)
class FolderInfo:
    id: int
    name: str
    uidvalidity: int
    uidnext: int
    special_use: str
    highestmodseq: int = 1


@dataclass(frozen=True, slots=True)
class StoredMessage:
    uid: int
    internal_date: float
    size: int
    flags: str
    message_id: str
    queue_id: str
    content: bytes


# Built once: delivery runs these for every message.
_SELECT_FOLDERS = select(mail_folder.c.name, mail_folder.c.id).where(
    mail_folder.c.mailbox == bindparam("b_mailbox")
)
# Taking UIDs is a change to the folder: the same statement raises its HIGHESTMODSEQ.
_NEXT_UIDS = (
    update(mail_folder)
    .where(mail_folder.c.id == bindparam("b_folder_id"))
    .values(
        uidnext=mail_folder.c.uidnext + bindparam("b_count"),
        highestmodseq=mail_folder.c.highestmodseq + 1,
    )
    .returning(mail_folder.c.uidnext, mail_folder.c.highestmodseq)
)
_NEXT_MODSEQ = (
    update(mail_folder)
    .where(mail_folder.c.id == bindparam("b_folder_id"))
    .values(highestmodseq=mail_folder.c.highestmodseq + 1)
    .returning(mail_folder.c.highestmodseq)
)
_INSERT_MESSAGE = insert(mail_message)


def next_uidvalidity(conn: Connection, mailbox: str, now: float, count: int = 1) -> int:
    """The first of `count` UIDVALIDITY values this mailbox has never used (RFC 3501 2.3.1.1).

    Seconds since the epoch when they are higher, else one past the highest ever given, kept
    in `mail_uidvalidity` (folders are deleted, the counter is not): a folder deleted and
    created again, even in the same second, gets a new value and so a new MAILBOXID.
    """
    last = conn.execute(
        select(mail_uidvalidity.c.last).where(mail_uidvalidity.c.mailbox == mailbox)
    ).scalar_one_or_none()
    if last is None:  # first use, or data older than the counter: start above every folder
        last = conn.execute(
            select(func.max(mail_folder.c.uidvalidity)).where(mail_folder.c.mailbox == mailbox)
        ).scalar_one_or_none()
        conn.execute(insert(mail_uidvalidity).values(mailbox=mailbox, last=0))
    first = max(int(now) & 0x7FFFFFFF, int(last or 0) + 1)
    conn.execute(
        update(mail_uidvalidity)
        .where(mail_uidvalidity.c.mailbox == mailbox)
        .values(last=first + count - 1)
    )
    return first


def ensure_folders(conn: Connection, mailbox: str, now: float) -> dict[str, int]:
    """Create the standard folders if missing; returns name -> folder id."""
    rows = conn.execute(_SELECT_FOLDERS, {"b_mailbox": mailbox}).all()
    existing = {r.name: r.id for r in rows}
    missing = [(n, s) for n, s in DEFAULT_FOLDERS if n not in existing]
    if missing:
        first = next_uidvalidity(conn, mailbox, now, len(missing))
        conn.execute(
            insert(mail_folder),
            [
                {
                    "mailbox": mailbox,
                    "name": name,
                    "uidvalidity": first + n,
                    "uidnext": 1,
                    "special_use": special,
                }
                for n, (name, special) in enumerate(missing)
            ],
        )
        return ensure_folders(conn, mailbox, now)
    return existing


def append_message(
    conn: Connection,
    mailbox: str,
    content: bytes,
    *,
    now: float,
    folder: str = "INBOX",
    flags: str = "",
    message_id: str = "",
    queue_id: str = "",
) -> int:
    """Store `content` in `folder` of `mailbox`; returns its UID."""
    folders = ensure_folders(conn, mailbox, now)
    folder_id = folders.get(folder)
    if folder_id is None:
        raise NotFoundError(f"mailbox {mailbox} has no folder {folder!r}")
    return append_to_folder(
        conn,
        folder_id,
        content,
        now=now,
        flags=flags,
        message_id=message_id,
        queue_id=queue_id,
    )


@dataclass(frozen=True, slots=True)
class Append:
    """One message to append: `append_messages` stores many in a few statements.

    A big message (SQLite) is `content` followed by `tail_size` more octets, copied inside
    the database from `tail_blob` (a column and rowid: the queue's copy) or written from
    `tail_chunks`, a chunk at a time (store/blobs.py), never whole in memory."""

    mailbox: str
    content: bytes
    message_id: str = ""
    queue_id: str = ""
    flags: str = ""
    tail_size: int = 0
    tail_blob: tuple[Column[Any], int] | None = None
    tail_chunks: Iterable[bytes] = ()


def append_messages(
    conn: Connection, messages: Sequence[Append], *, now: float, folder: str = "INBOX"
) -> list[int]:
    """Store each message in `folder` of its mailbox; their UIDs, in order.

    One UID update per folder and one INSERT for all: a batch of deliveries to one mailbox
    costs what one does. UIDs are given in the order of `messages`.
    """
    by_mailbox: dict[str, list[int]] = {}
    for index, message in enumerate(messages):
        by_mailbox.setdefault(message.mailbox, []).append(index)
    uids = [0] * len(messages)
    rows: list[dict[str, object]] = []
    tailed: list[tuple[dict[str, object], Append]] = []
    # Folders in one order (their UID rows stay locked to the commit): two servers delivering
    # to the same mailboxes at once never wait on each other in a circle (a deadlock).
    for mailbox, indexes in sorted(by_mailbox.items()):
        folder_id = ensure_folders(conn, mailbox, now).get(folder)
        if folder_id is None:
            raise NotFoundError(f"mailbox {mailbox} has no folder {folder!r}")
        last, modseq = conn.execute(
            _NEXT_UIDS, {"b_folder_id": folder_id, "b_count": len(indexes)}
        ).one()
        first = int(last) - len(indexes)
        for offset, index in enumerate(indexes):
            message = messages[index]
            uids[index] = first + offset
            row: dict[str, object] = {
                "folder_id": folder_id,
                "uid": first + offset,
                "internal_date": now,
                "size": len(message.content) + message.tail_size,
                "flags": message.flags,
                "message_id": message.message_id,
                "queue_id": message.queue_id,
                "content": message.content,
                "modseq": modseq,
            }
            if message.tail_size:
                tailed.append((row, message))
            else:
                rows.append(row)
    if rows:
        conn.execute(_INSERT_MESSAGE, rows)
    for row, message in tailed:
        _insert_tailed(conn, row, message)
    return uids


def _insert_tailed(conn: Connection, row: dict[str, object], message: Append) -> None:
    """Insert one big message: its start, then its tail copied or written in chunks."""
    inserted = conn.execute(_INSERT_MESSAGE, {**row, "content": b""}).inserted_primary_key
    assert inserted is not None
    rowid = int(inserted[0])
    head = message.content
    size = len(head) + message.tail_size
    if message.tail_blob is None:
        chunks = itertools.chain([head], message.tail_chunks)  # one chunk at a time
        blobs.fill_blob(conn, mail_message.c.content, rowid, size, chunks)
        return
    blobs.size_blob(conn, mail_message.c.content, rowid, size)
    blobs.write_blob(conn, mail_message.c.content, rowid, [head])
    blobs.copy_blob(conn, message.tail_blob, (mail_message.c.content, rowid), at=len(head))


def list_folders(conn: Connection, mailbox: str) -> list[FolderInfo]:
    rows = conn.execute(
        select(mail_folder).where(mail_folder.c.mailbox == mailbox).order_by(mail_folder.c.id)
    ).all()
    return [_folder_info(r) for r in rows]


def list_messages(conn: Connection, mailbox: str, folder: str = "INBOX") -> list[StoredMessage]:
    rows = conn.execute(
        select(mail_message)
        .join(mail_folder, mail_folder.c.id == mail_message.c.folder_id)
        .where(mail_folder.c.mailbox == mailbox, mail_folder.c.name == folder)
        .order_by(mail_message.c.uid)
    ).all()
    return [
        StoredMessage(r.uid, r.internal_date, r.size, r.flags, r.message_id, r.queue_id, r.content)
        for r in rows
    ]


# -- client access (IMAP, POP3): folders by id, flags, copies, expunges ---------------------
# Synchronous, each taking the caller's connection: the client-access layers run them in a
# thread inside one store transaction.


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """What a client session keeps of a message: everything but its content."""

    uid: int
    internal_date: float
    size: int
    flags: str
    modseq: int = 1  # CONDSTORE: the folder's HIGHESTMODSEQ when it last changed


@dataclass(frozen=True, slots=True)
class FolderState:
    """A folder's numbers and every message's metadata, in UID order."""

    folder: FolderInfo
    subscribed: bool
    messages: list[MessageMeta]


def get_folder(conn: Connection, mailbox: str, name: str) -> FolderInfo | None:
    """The folder `name` of `mailbox` (INBOX in any case), or None."""
    if name.upper() == "INBOX":
        name = "INBOX"
    row = conn.execute(
        select(mail_folder).where(mail_folder.c.mailbox == mailbox, mail_folder.c.name == name)
    ).first()
    if row is None:
        return None
    return _folder_info(row)


def _folder_info(row: Any) -> FolderInfo:
    return FolderInfo(
        row.id, row.name, row.uidvalidity, row.uidnext, row.special_use, row.highestmodseq
    )


def folder_state(conn: Connection, folder_id: int) -> FolderState | None:
    row = conn.execute(select(mail_folder).where(mail_folder.c.id == folder_id)).first()
    if row is None:
        return None
    info = _folder_info(row)
    rows = conn.execute(
        select(
            mail_message.c.uid,
            mail_message.c.internal_date,
            mail_message.c.size,
            mail_message.c.flags,
            mail_message.c.modseq,
        )
        .where(mail_message.c.folder_id == folder_id)
        .order_by(mail_message.c.uid)
    ).all()
    return FolderState(
        info,
        bool(row.subscribed),
        [MessageMeta(r.uid, r.internal_date, r.size, r.flags, r.modseq) for r in rows],
    )


_FOLDER_MARK = select(
    mail_folder.c.uidnext,
    select(func.count())
    .select_from(mail_message)
    .where(mail_message.c.folder_id == mail_folder.c.id)
    .scalar_subquery(),
    mail_folder.c.highestmodseq,
).where(mail_folder.c.id == bindparam("b_folder_id"))

#: (uidnext, message count, highestmodseq): what `folder_mark` probes.
Mark = tuple[int, int, int]


def folder_mark(conn: Connection, folder_id: int) -> Mark | None:
    """(uidnext, message count, highestmodseq): a cheap probe that changes when mail arrives
    or leaves or flags change, by whatever way (IMAP in another process, POP3, delivery)."""
    row = conn.execute(_FOLDER_MARK, {"b_folder_id": folder_id}).first()
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]))


def folder_marks(conn: Connection, folder_ids: Sequence[int]) -> dict[int, Mark]:
    """`folder_mark` of many folders in one query (folders that no longer exist are absent)."""
    if not folder_ids:
        return {}
    count = (
        select(func.count())
        .select_from(mail_message)
        .where(mail_message.c.folder_id == mail_folder.c.id)
        .scalar_subquery()
    )
    rows = conn.execute(
        select(mail_folder.c.id, mail_folder.c.uidnext, count, mail_folder.c.highestmodseq).where(
            mail_folder.c.id.in_(list(folder_ids))
        )
    ).all()
    return {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows}


def load_contents(conn: Connection, folder_id: int, uids: Sequence[int]) -> dict[int, bytes]:
    """The contents of the given UIDs of one folder (absent UIDs are left out)."""
    if not uids:
        return {}
    rows = conn.execute(
        select(mail_message.c.uid, mail_message.c.content).where(
            mail_message.c.folder_id == folder_id, mail_message.c.uid.in_(list(uids))
        )
    ).all()
    return {int(r.uid): bytes(r.content) for r in rows}


def set_flags(conn: Connection, folder_id: int, changes: Sequence[tuple[int, str]]) -> int:
    """Replace the flags of messages: (uid, "\\\\Seen $Label ...") pairs. They take the
    folder's next modseq, which is returned (0 when there is nothing to change)."""
    if not changes:
        return 0
    modseq = next_modseq(conn, folder_id)
    conn.execute(
        update(mail_message)
        .where(
            mail_message.c.folder_id == bindparam("b_folder_id"),
            mail_message.c.uid == bindparam("b_uid"),
        )
        .values(flags=bindparam("b_flags"), modseq=modseq),
        [{"b_folder_id": folder_id, "b_uid": uid, "b_flags": flags} for uid, flags in changes],
    )
    return modseq


def next_modseq(conn: Connection, folder_id: int) -> int:
    """Raise the folder's HIGHESTMODSEQ by one (a change to it); the new value."""
    return int(conn.execute(_NEXT_MODSEQ, {"b_folder_id": folder_id}).scalar_one())


def message_modseqs(conn: Connection, folder_id: int, uids: Sequence[int]) -> dict[int, int]:
    """The current modseq of the given UIDs (STORE UNCHANGEDSINCE checks it in its own
    write transaction, so another process's change in between is seen). The folder row is
    locked first (PostgreSQL; SQLite's write transaction already excludes other writers), so
    no change can come between this read and the caller's update."""
    if not uids:
        return {}
    conn.execute(select(mail_folder.c.id).where(mail_folder.c.id == folder_id).with_for_update())
    rows = conn.execute(
        select(mail_message.c.uid, mail_message.c.modseq).where(
            mail_message.c.folder_id == folder_id, mail_message.c.uid.in_(list(uids))
        )
    ).all()
    return {int(r.uid): int(r.modseq) for r in rows}


def copy_messages(
    conn: Connection, source_id: int, uids: Sequence[int], dest_id: int
) -> list[tuple[int, int]]:
    """Copy messages to another folder (new UIDs there); (source uid, new uid) pairs."""
    rows = conn.execute(
        select(mail_message)
        .where(mail_message.c.folder_id == source_id, mail_message.c.uid.in_(list(uids)))
        .order_by(mail_message.c.uid)
    ).all()
    if not rows:
        return []
    last, modseq = conn.execute(_NEXT_UIDS, {"b_folder_id": dest_id, "b_count": len(rows)}).one()
    first = int(last) - len(rows)
    # a copy keeps the original's internal date and flags (RFC 3501 6.4.7)
    conn.execute(
        _INSERT_MESSAGE,
        [
            {
                "folder_id": dest_id,
                "uid": first + offset,
                "internal_date": r.internal_date,
                "size": r.size,
                "flags": r.flags,
                "message_id": r.message_id,
                "queue_id": r.queue_id,
                "content": r.content,
                "modseq": modseq,
            }
            for offset, r in enumerate(rows)
        ],
    )
    return [(int(r.uid), first + offset) for offset, r in enumerate(rows)]


def delete_messages(conn: Connection, folder_id: int, uids: Sequence[int]) -> int:
    """Remove messages for good (EXPUNGE, POP3 DELE at QUIT); how many went."""
    if not uids:
        return 0
    result = conn.execute(
        delete(mail_message).where(
            mail_message.c.folder_id == folder_id, mail_message.c.uid.in_(list(uids))
        )
    )
    gone = int(result.rowcount or 0)
    if gone:
        next_modseq(conn, folder_id)  # an expunge is a change clients resync on
    return gone


def append_to_folder(
    conn: Connection,
    folder_id: int,
    content: bytes,
    *,
    now: float,
    flags: str = "",
    message_id: str = "",
    queue_id: str = "",
) -> int:
    """Store `content` in a folder known by id (IMAP APPEND); returns its UID."""
    next_uid, modseq = conn.execute(_NEXT_UIDS, {"b_folder_id": folder_id, "b_count": 1}).one()
    uid = next_uid - 1
    conn.execute(
        _INSERT_MESSAGE,
        {
            "folder_id": folder_id,
            "uid": uid,
            "internal_date": now,
            "size": len(content),
            "flags": flags,
            "message_id": message_id,
            "queue_id": queue_id,
            "content": content,
            "modseq": modseq,
        },
    )
    return int(uid)


def create_folder(
    conn: Connection, mailbox: str, name: str, *, now: float, special_use: str = ""
) -> FolderInfo:
    """A new folder with a fresh UIDVALIDITY and, if given, an RFC 6154 special-use
    attribute ("\\Archive"); `ValueError` if the name is taken."""
    if get_folder(conn, mailbox, name) is not None:
        raise ValueError(name)
    uidvalidity = next_uidvalidity(conn, mailbox, now)
    conn.execute(
        insert(mail_folder).values(
            mailbox=mailbox,
            name=name,
            uidvalidity=uidvalidity,
            uidnext=1,
            special_use=special_use,
            subscribed=False,  # CREATE does not subscribe (RFC 3501 6.3.3); SUBSCRIBE does
        )
    )
    info = get_folder(conn, mailbox, name)
    assert info is not None
    return info


def delete_folder(conn: Connection, mailbox: str, name: str) -> None:
    """Delete a folder and its messages; `KeyError` if there is none."""
    info = get_folder(conn, mailbox, name)
    if info is None:
        raise KeyError(name)
    conn.execute(delete(mail_message).where(mail_message.c.folder_id == info.id))
    conn.execute(delete(mail_folder).where(mail_folder.c.id == info.id))


def rename_folder(conn: Connection, mailbox: str, renames: Sequence[tuple[str, str]]) -> None:
    """Rename folders (a parent and its children, as pairs); UIDVALIDITY is kept."""
    for before, after in renames:
        conn.execute(
            update(mail_folder)
            .where(mail_folder.c.mailbox == mailbox, mail_folder.c.name == before)
            .values(name=after)
        )


def set_subscribed(conn: Connection, mailbox: str, name: str, subscribed: bool) -> None:
    conn.execute(
        update(mail_folder)
        .where(mail_folder.c.mailbox == mailbox, mail_folder.c.name == name)
        .values(subscribed=subscribed)
    )


def folder_names(conn: Connection, mailbox: str) -> list[tuple[str, str, bool]]:
    """(name, special use, subscribed) of every folder, by name."""
    rows = conn.execute(
        select(mail_folder.c.name, mail_folder.c.special_use, mail_folder.c.subscribed)
        .where(mail_folder.c.mailbox == mailbox)
        .order_by(mail_folder.c.name)
    ).all()
    return [(r.name, r.special_use, bool(r.subscribed)) for r in rows]
