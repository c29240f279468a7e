"""Transports the queue calls: local (mailbox store), remote (SMTP client)."""
