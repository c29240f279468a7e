"""The mailbox store: folders and messages with IMAP's UIDs, in the database.

One job: append a message to a mailbox folder (taking the next UID atomically) and read
folders back. Callers pass their open transaction, so delivery can commit the message and the
queue's record of it together. Every mailbox gets the standard folders on first use; UIDVALIDITY
is fixed when a folder is created and UIDs only grow, so clients' caches stay valid across
restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, insert, select, update

from sitemail.core.errors import NotFoundError
from sitemail.store.tables import mail_folder, mail_message

__all__ = [
    "DEFAULT_FOLDERS",
    "Append",
    "FolderInfo",
    "StoredMessage",
    "append_message",
    "append_messages",
    "ensure_folders",
    "list_folders",
    "list_messages",
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
_NEXT_UID = (
    update(mail_folder)
    .where(mail_folder.c.id == bindparam("b_folder_id"))
    .values(uidnext=mail_folder.c.uidnext + 1)
    .returning(mail_folder.c.uidnext)
)
_NEXT_UIDS = (
    update(mail_folder)
    .where(mail_folder.c.id == bindparam("b_folder_id"))
    .values(uidnext=mail_folder.c.uidnext + bindparam("b_count"))
    .returning(mail_folder.c.uidnext)
)
_INSERT_MESSAGE = insert(mail_message)


def ensure_folders(conn: Connection, mailbox: str, now: float) -> dict[str, int]:
    """Create the standard folders if missing; returns name -> folder id."""
    rows = conn.execute(_SELECT_FOLDERS, {"b_mailbox": mailbox}).all()
    existing = {r.name: r.id for r in rows}
    missing = [(n, s) for n, s in DEFAULT_FOLDERS if n not in existing]
    if missing:
        # UIDVALIDITY must change if a folder is ever re-created; seconds since the epoch do.
        uidvalidity = int(now) & 0x7FFFFFFF or 1
        conn.execute(
            insert(mail_folder),
            [
                {
                    "mailbox": mailbox,
                    "name": name,
                    "uidvalidity": uidvalidity,
                    "uidnext": 1,
                    "special_use": special,
                }
                for name, special in missing
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
    uid = conn.execute(_NEXT_UID, {"b_folder_id": folder_id}).scalar_one() - 1
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
        },
    )
    return int(uid)


@dataclass(frozen=True, slots=True)
class Append:
    """One message to append: `append_messages` stores many in a few statements."""

    mailbox: str
    content: bytes
    message_id: str = ""
    queue_id: str = ""
    flags: str = ""


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
    for mailbox, indexes in by_mailbox.items():
        folder_id = ensure_folders(conn, mailbox, now).get(folder)
        if folder_id is None:
            raise NotFoundError(f"mailbox {mailbox} has no folder {folder!r}")
        last = conn.execute(
            _NEXT_UIDS, {"b_folder_id": folder_id, "b_count": len(indexes)}
        ).scalar_one()
        first = int(last) - len(indexes)
        for offset, index in enumerate(indexes):
            message = messages[index]
            uids[index] = first + offset
            rows.append(
                {
                    "folder_id": folder_id,
                    "uid": first + offset,
                    "internal_date": now,
                    "size": len(message.content),
                    "flags": message.flags,
                    "message_id": message.message_id,
                    "queue_id": message.queue_id,
                    "content": message.content,
                }
            )
    if rows:
        conn.execute(_INSERT_MESSAGE, rows)
    return uids


def list_folders(conn: Connection, mailbox: str) -> list[FolderInfo]:
    rows = conn.execute(
        select(mail_folder).where(mail_folder.c.mailbox == mailbox).order_by(mail_folder.c.id)
    ).all()
    return [FolderInfo(r.id, r.name, r.uidvalidity, r.uidnext, r.special_use) for r in rows]


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
