"""Which sibling site sent a message: the hop signature checked with the key replication trusts.

One job: for the SMTP policy, turn a message just received into its proven origin (routing.
trace.verified_origin), or None. The key for a site is the one replication itself believes
for it (`Replicator.key_for`: pinned on our connector to that site, else the key the site
publishes in the directory replication brought us); our own site's key never counts (we do
not send site mail to ourselves, so a trace of ours coming back proves nothing).

Keys are read from the directory at most every `ttl` seconds (a directory read costs about a
millisecond, and every message from a sibling site asks): a connector added or removed counts
within `ttl`. Until then an old key can only fail to prove (the message is stored as it is) or
prove what its site really signed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from sitemail.core.envelope import Envelope
from sitemail.core.errors import InvalidValueError
from sitemail.queue.content import Content
from sitemail.replication.keys import PublicKey
from sitemail.replication.replicator import Replicator
from sitemail.routing.trace import Origin, content_digest, verified_origin

__all__ = ["SiblingOrigins"]

_TTL = 10.0
_MAX_SITES = 256  # names remembered (a forged trace may name any site)


class SiblingOrigins:
    """`origin(envelope, stored)`: the sibling site and queue id a message proves it has."""

    def __init__(
        self,
        replicator: Replicator,
        *,
        ttl: float = _TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._replicator = replicator
        self._ttl = ttl
        self._clock = clock
        self._keys: dict[str, PublicKey | None] = {}
        self._lookup: Callable[[str], PublicKey | None] | None = None
        self._read_at = 0.0

    def origin(self, envelope: Envelope, stored: Content) -> Origin | None:
        """The proven origin of a message as stored (our Received field first), or None.
        A big message's digest is read from its spool file a chunk at a time (blocking:
        the policy calls this in a thread for one)."""
        big = not stored.in_memory
        return verified_origin(
            stored.head if big else stored.whole(),
            here=self._replicator.site,
            sender=envelope.sender,
            recipients=[r.address for r in envelope.recipients],
            key_for=self.key_for,
            digest_from=functools.partial(_digest_after, stored) if big else None,
        )

    def key_for(self, site: str) -> PublicKey | None:
        now = self._clock()
        if self._lookup is None or now - self._read_at > self._ttl or len(self._keys) > _MAX_SITES:
            self._lookup = self._replicator.key_for(self._replicator.connectors())
            self._keys = {}
            self._read_at = now
        if site == self._replicator.site:
            return None
        if site not in self._keys:
            try:
                self._keys[site] = self._lookup(site)
            except InvalidValueError:  # a site publishing a key that is no key proves nothing
                self._keys[site] = None
        return self._keys[site]


def _digest_after(stored: Content, offset: int) -> bytes:
    """The digest of a big message from `offset` on, read in chunks."""
    return content_digest(stored.chunks_after(offset))
