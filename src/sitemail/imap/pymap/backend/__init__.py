"""Mailbox and session bases the sitemail backend builds on."""
