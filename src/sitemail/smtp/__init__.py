"""Inbound SMTP (aiosmtpd engine, our policy) and the listeners of the Internet Mail Service."""
