"""Mailboxes: folders, messages, flags and UIDs, shared by delivery and client access."""
