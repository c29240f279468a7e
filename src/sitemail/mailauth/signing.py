"""DKIM signatures on mail leaving the organisation (RFC 6376 RSA-SHA256, RFC 8463 Ed25519).

One job: given a message on its way to the Internet, put this site's DKIM-Signature fields
in front of it when its From domain is one of the organisation's domains. Mail between
sites is not signed here (the caller signs only what goes out by MX or relay): the edge
site that receives it from a sibling has nothing to verify.

The signature is made with dkimpy over the message as it goes on the wire (CRLF line
ends), with the fields RFC 6376 section 5.4 recommends, From signed twice so no second
From can be added (dkimpy's default). Canonicalization relaxed/simple (dkimpy's default):
the header survives refolding, the body must arrive as sent.

Bound: dkimpy reads the whole message (it has no streaming interface), so a message in the
queue's handle form is read into memory in a thread to be signed, and one bigger than
`max_size` ([mailauth] max_size) leaves unsigned with a warning in the log; the default
is above the size any large mailbox provider accepts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import dkim
from aiosmtplib.protocol import normalize_message_line_endings

from sitemail.config import MailauthConfig
from sitemail.core.errors import ConfigError
from sitemail.mailauth.dkimkeys import SigningKey, load_signing_keys, state_stamp
from sitemail.mailauth.headers import from_domain
from sitemail.queue.content import Content

__all__ = ["ActiveKeys", "DkimSigner", "signer_for"]

log = logging.getLogger("sitemail.mailauth")

_SIGN_IN_THREAD = 256 * 1024  # octets: hashing a bigger message is done off the event loop


class ActiveKeys:
    """The data dir's active key set, read again when `dkim rotate` changes it (one stat per
    message), so a running server signs with the new selector once it is activated."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._stamp: tuple[int, int] | None = None
        self._keys: tuple[SigningKey, ...] = ()
        self()

    def __call__(self) -> tuple[SigningKey, ...]:
        stamp = state_stamp(self._data_dir)
        if stamp != self._stamp:
            try:
                self._keys = load_signing_keys(self._data_dir)
            except ConfigError as exc:  # keep signing with the keys we had
                log.warning("dkim keys not reloaded: %s", exc.message)
            self._stamp = stamp
        return self._keys


class DkimSigner:
    """Signs outgoing messages with the active key set for the organisation's domains."""

    def __init__(
        self,
        keys: Callable[[], Sequence[SigningKey]],
        is_org_domain: Callable[[str], bool],
        *,
        max_size: int,
    ) -> None:
        """``keys`` gives the site's active keys (`ActiveKeys`); ``is_org_domain`` says
        whether a From domain is one the organisation sends from."""
        self._keys = keys
        self._is_org_domain = is_org_domain
        self._max_size = max_size

    def domain_to_sign(self, content: Content) -> str | None:
        """The domain this message is signed for, or None (not ours, no keys, several Froms)."""
        if not self._keys():
            return None
        domain = from_domain(content.head)
        if not domain or not domain.isascii():  # our domains are DNS names (IDNs as A-labels)
            return None
        return domain if self._is_org_domain(domain) else None

    async def sign(self, content: Content, queue_id: str = "") -> Content:
        """``content`` with DKIM-Signature fields in front, or unchanged when it is not
        signed (see ``domain_to_sign``, and the size bound)."""
        domain = self.domain_to_sign(content)
        if domain is None:
            return content
        if content.size > self._max_size:
            log.warning(
                "dkim unsigned queue_id=%s size=%d over [mailauth] max_size=%d",
                queue_id,
                content.size,
                self._max_size,
            )
            return content
        try:
            if content.in_memory and content.size <= _SIGN_IN_THREAD:
                fields = self._signatures(content, domain)
            else:
                fields = await asyncio.to_thread(self._signatures, content, domain)
        except dkim.DKIMException as exc:  # a header dkimpy cannot parse: send it unsigned
            log.warning("dkim unsigned queue_id=%s: %s", queue_id, exc)
            return content
        return content.with_prefix(fields)

    def _signatures(self, content: Content, domain: str) -> bytes:
        """One DKIM-Signature field per key, each over the message as the wire carries it
        (CRLF line ends) without the others (blocking for a message behind a handle)."""
        message = normalize_message_line_endings(content.whole())
        out = b""
        for key in self._keys():
            out += dkim.sign(
                message,
                key.selector.encode("ascii"),
                domain.encode("ascii"),
                key.private,
                signature_algorithm=key.algorithm.encode("ascii"),
            )
        return out


def signer_for(
    config: MailauthConfig, data_dir: Path, is_org_domain: Callable[[str], bool]
) -> DkimSigner | None:
    """The server's signer; None when [mailauth] sign is off."""
    if not config.sign:
        return None
    keys = ActiveKeys(data_dir)
    if not keys():
        log.warning("dkim: no keys in this data dir, mail leaves unsigned (`sitemail dkim init`)")
    return DkimSigner(keys, is_org_domain, max_size=config.max_size)
