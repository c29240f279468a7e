"""Package of interfaces that must be implemented by IMAP backends."""
