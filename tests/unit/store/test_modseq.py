"""CONDSTORE's modseqs in the mailbox store: every write raises HIGHESTMODSEQ by one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sitemail.mailbox import (
    Append,
    append_messages,
    append_to_folder,
    copy_messages,
    delete_messages,
    ensure_folders,
    folder_mark,
    folder_state,
    message_modseqs,
    set_flags,
)
from sitemail.store import Store, default_url, open_store, upgrade

OWNER = "5f0c3a1e-0000-4000-8000-000000000001"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(default_url(tmp_path))
    upgrade(s)
    yield s
    s.close()


def highest(store: Store, folder_id: int) -> int:
    with store.read() as conn:
        mark = folder_mark(conn, folder_id)
    assert mark is not None
    return mark[2]


def test_modseq_every_write_raises_it_by_one(store: Store) -> None:
    """Delivery, append, copy, flags and expunge each raise HIGHESTMODSEQ by exactly one, and
    the messages they touch take the new value."""
    with store.write() as conn:
        folders = ensure_folders(conn, OWNER, 0.0)
    inbox, trash = folders["INBOX"], folders["Trash"]
    assert highest(store, inbox) == 1
    with store.write() as conn:
        append_messages(conn, [Append(OWNER, b"a\r\n"), Append(OWNER, b"b\r\n")], now=1.0)
    assert highest(store, inbox) == 2
    with store.write() as conn:
        uid = append_to_folder(conn, inbox, b"c\r\n", now=2.0)
    assert highest(store, inbox) == 3
    with store.write() as conn:
        assert set_flags(conn, inbox, [(1, "\\Seen"), (uid, "\\Flagged")]) == 4
        assert message_modseqs(conn, inbox, [1, 2, uid, 99]) == {1: 4, 2: 2, uid: 4}
    with store.write() as conn:
        copy_messages(conn, inbox, [1, 2], trash)
        assert delete_messages(conn, inbox, [2]) == 1
    assert highest(store, inbox) == 5
    assert highest(store, trash) == 2
    with store.read() as conn:
        state = folder_state(conn, trash)
    assert state is not None
    assert [m.modseq for m in state.messages] == [2, 2]


def test_modseq_a_write_that_changes_nothing_keeps_it(store: Store) -> None:
    """No flags to set and no message to delete: HIGHESTMODSEQ stays."""
    with store.write() as conn:
        inbox = ensure_folders(conn, OWNER, 0.0)["INBOX"]
        assert set_flags(conn, inbox, []) == 0
        assert delete_messages(conn, inbox, [1, 2]) == 0
    assert highest(store, inbox) == 1
