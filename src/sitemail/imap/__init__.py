"""IMAP4rev1 client access: pymap as the protocol engine, our backend on the mailbox store."""

from sitemail.imap.server import ImapListener, ImapService

__all__ = ["ImapListener", "ImapService"]
