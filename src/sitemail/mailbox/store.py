"""The mailbox store: folders and messages with IMAP's UIDs, in the database.

One job: append a message to a mailbox folder (taking the next UID atomically) and read
folders back. Callers pass their open transaction, so delivery can commit the message and the
queue's record of it together. Every mailbox gets the standard folders on first use; UIDVALIDITY
is fixed when a folder is created and UIDs only grow, so clients' caches stay valid across
restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from sitemail.core.errors import NotFoundError
from sitemail.store.tables import mail_folder, mail_message

__all__ = [
    "DEFAULT_FOLDERS",
    "FolderInfo",
    "StoredMessage",
    "append_message",
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


def ensure_folders(conn: Connection, mailbox: str, now: float) -> dict[str, int]:
    """Create the standard folders if missing; returns name -> folder id."""
    rows = conn.execute(
        select(mail_folder.c.name, mail_folder.c.id).where(mail_folder.c.mailbox == mailbox)
    ).all()
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
    uid = (
        conn.execute(
            update(mail_folder)
            .where(mail_folder.c.id == folder_id)
            .values(uidnext=mail_folder.c.uidnext + 1)
            .returning(mail_folder.c.uidnext)
        ).scalar_one()
        - 1
    )
    conn.execute(
        insert(mail_message).values(
            folder_id=folder_id,
            uid=uid,
            internal_date=now,
            size=len(content),
            flags=flags,
            message_id=message_id,
            queue_id=queue_id,
            content=content,
        )
    )
    return int(uid)


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
