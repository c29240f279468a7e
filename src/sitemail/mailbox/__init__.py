"""Mailboxes: folders, messages, flags and UIDs, shared by delivery and client access."""

from sitemail.mailbox.store import (
    DEFAULT_FOLDERS,
    Append,
    FolderInfo,
    StoredMessage,
    append_message,
    append_messages,
    ensure_folders,
    list_folders,
    list_messages,
)

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
