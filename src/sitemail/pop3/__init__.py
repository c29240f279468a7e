"""POP3 client access (RFC 1939 with CAPA, UIDL, TOP, STLS and SASL PLAIN): our own code."""

from sitemail.pop3.server import Pop3Listener, Pop3Service

__all__ = ["Pop3Listener", "Pop3Service"]
