"""IMAP4rev1 client access: our fork of pymap (imap/pymap/) as the engine, our backend on the store."""

from sitemail.imap.server import ImapListener, ImapService

__all__ = ["ImapListener", "ImapService"]
