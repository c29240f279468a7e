"""The server side of TLS: one policy for every listener, and a certificate reloaded in place.

One job: make the `ssl.SSLContext` that SMTP (STARTTLS and 465), submission, IMAP, POP3 and
the admin port all use, with Mozilla's "intermediate" settings: TLS 1.2 and 1.3 only; for
TLS 1.2, ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 only (AEAD, forward secret;
no CBC, no static RSA, no DHE whose parameters would need managing); TLS 1.3's suites as
OpenSSL has them (all AEAD); the server's order of preference; no renegotiation.

The certificate and key files are looked at again (their size, mtime and inode) at most once
a second, when a client starts a handshake; when they changed, a new context is loaded and
handed to the handshake from the SNI callback, which OpenSSL calls for every ClientHello,
with or without a server name. So `sitemail tls set` takes effect for new connections without
a restart, in every process that serves TLS, without a watcher task; connections already up
keep the certificate they began with. A pair that does not load (a half-written file) leaves
the previous certificate in use, and the next handshake tries again.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from pathlib import Path

from sitemail.core.errors import ConfigError

__all__ = ["AEAD_CIPHERS", "ReloadingContext", "server_context"]

log = logging.getLogger("sitemail.tls")

# TLS 1.2 suites of Mozilla's "intermediate" profile (v5.7), less the DHE ones.
AEAD_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
_CHECK_EVERY = 1.0  # seconds between looks at the files


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context with our policy and this certificate (ConfigError when it does not
    load, naming both files)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(AEAD_CIPHERS)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    context.options |= ssl.OP_NO_COMPRESSION
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from exc
    return context


def _stamp(path: Path) -> tuple[int, int, int]:
    try:
        info = path.stat()
    except OSError:
        return (0, 0, 0)
    return (info.st_ino, info.st_size, info.st_mtime_ns)


class ReloadingContext:
    """`context` is what the listeners are given; its handshakes use the latest good pair."""

    def __init__(self, cert: Path, key: Path) -> None:
        self._cert, self._key = cert, key
        self._stamps = (_stamp(cert), _stamp(key))
        self._failed = self._stamps
        self.context = server_context(cert, key)
        self._current = self.context
        self._checked = time.monotonic()
        self.context.sni_callback = self._choose
        self.reloads = 0  # how many times a new pair was taken (shown by tests and logs)

    def _choose(self, conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: object) -> None:
        self.refresh()
        if conn.context is not self._current:
            conn.context = self._current

    def refresh(self, *, force: bool = False) -> None:
        """Load the files again if they changed (looked at most once a second)."""
        now = time.monotonic()
        if not force and now - self._checked < _CHECK_EVERY:
            return
        self._checked = now
        stamps = (_stamp(self._cert), _stamp(self._key))
        if stamps in (self._stamps, self._failed):
            return
        try:
            fresh = server_context(self._cert, self._key)
        except ConfigError as exc:
            self._failed = stamps  # said once per change of the files, not per handshake
            log.warning("TLS certificate not reloaded (the previous one stays): %s", exc)
            return
        self._stamps = stamps
        self._current = fresh
        self.reloads += 1
        log.info("TLS certificate reloaded from %s (pid %d)", self._cert, os.getpid())
