"""Client authentication: a login name and password to a mailbox of this site, or a refusal.

One job: answer "who is this?" for IMAP, POP3 and submission alike. Collaborators: the
`Directory` (address lookup, password hashes), a `Clock`, `AuthConfig`.

Rules:
- The login name is any of the mailbox's addresses (primary or secondary, any case), or its
  alias. Password hashes are this site's own (`mailbox_secret`, never replicated), so only a
  mailbox whose home site is this one can log in here.
- A mailbox of another site gets `ELSEWHERE` naming its home site's host, so a client set up
  on the wrong server says where to go. (The address's existence is public anyway: SMTP
  accepts it at RCPT.)
- No user enumeration: an unknown name, a non-mailbox, a mailbox without a password and a wrong
  password all answer `FAILED` with one text, after the same scrypt work (a dummy hash is
  verified when there is no real one) and the same `failure_delay`.
- Lock-out per client address: `max_failures` failures within `window` seconds lock that
  address out of every login for `lockout` seconds; while locked, passwords are not even
  checked (brute force gets no answers), and the reply says so without naming any user.
Transport rules (TLS before AUTH) belong to each protocol; this module never sees a socket.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from sitemail.config.model import AuthConfig
from sitemail.core.clock import Clock
from sitemail.core.errors import ConflictError, NotFoundError
from sitemail.directory.model import ObjectKind
from sitemail.directory.passwords import hash_password, verify_password
from sitemail.directory.service import Directory

__all__ = ["AuthOutcome", "AuthResult", "Authenticator"]

FAILED_TEXT = "authentication failed"
LOCKED_TEXT = "too many failed logins from your address; try again later"
_MAX_NAME = 320  # an address at most (RFC 5321 4.5.3.1.3)
_MAX_PASSWORD = 1024
_MAX_TRACKED = 100_000  # client addresses remembered for failures and lock-outs


class AuthOutcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    LOCKED = "locked"
    ELSEWHERE = "elsewhere"  # a mailbox of another site: log in there


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: AuthOutcome
    text: str
    mailbox: str = ""  # the mailbox's guid when OK
    alias: str = ""
    addresses: frozenset[str] = frozenset()  # lower-case SMTP addresses the user may send as
    home_site: str = ""
    home_host: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK


class Authenticator:
    """Shared by every client-access listener of one server (one lock-out table)."""

    def __init__(
        self,
        directory: Directory,
        clock: Clock,
        settings: AuthConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_attempt: Callable[[str, bool], None] | None = None,
        on_lock: Callable[[str, float], None] | None = None,
    ) -> None:
        # IMAP and POP3 run in worker processes (sitemail.frontends): they report each
        # attempt (peer, failed?) to the server, which shares its lock-outs back with them.
        self._on_attempt = on_attempt
        self._on_lock = on_lock
        self._sleep = sleep
        self._directory = directory
        self._clock = clock
        self._settings = settings
        self._failures: dict[str, collections.deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._dummy_hash: str | None = None

    def is_locked(self, peer_ip: str) -> bool:
        until = self._locked_until.get(peer_ip)
        if until is None:
            return False
        if self._clock.now() >= until:
            del self._locked_until[peer_ip]
            self._failures.pop(peer_ip, None)
            return False
        return True

    async def authenticate(self, login: str, password: str, peer_ip: str) -> AuthResult:
        """Check a login; every refusal is answered only after `failure_delay`."""
        if self.is_locked(peer_ip):
            await self._sleep(self._settings.failure_delay)
            return AuthResult(AuthOutcome.LOCKED, LOCKED_TEXT)
        result = await asyncio.to_thread(self._check, login, password)
        if result.outcome is AuthOutcome.FAILED or result.ok:
            self.record(peer_ip, failed=not result.ok)
            if self._on_attempt is not None:
                self._on_attempt(peer_ip, not result.ok)
        if result.outcome is AuthOutcome.FAILED:
            await self._sleep(self._settings.failure_delay)
        return result

    def record(self, peer_ip: str, *, failed: bool) -> None:
        """Count a failed login from this address (or clear its count after a success)."""
        if failed:
            self._count_failure(peer_ip)
        else:
            self._failures.pop(peer_ip, None)

    def lock(self, peer_ip: str, until: float) -> None:
        """Lock this address out until then (a lock-out decided by another process)."""
        self._locked_until[peer_ip] = max(until, self._locked_until.get(peer_ip, 0.0))

    def _count_failure(self, peer_ip: str) -> None:
        now = self._clock.now()
        times = self._failures.setdefault(peer_ip, collections.deque())
        times.append(now)
        while times and times[0] < now - self._settings.window:
            times.popleft()
        if len(times) >= self._settings.max_failures:
            self._locked_until[peer_ip] = now + self._settings.lockout
            if self._on_lock is not None:
                self._on_lock(peer_ip, now + self._settings.lockout)
        if len(self._failures) > _MAX_TRACKED:  # bounded memory under a spread-out attack
            self._failures.pop(next(iter(self._failures)), None)
        if len(self._locked_until) > _MAX_TRACKED:
            self._locked_until = {ip: t for ip, t in self._locked_until.items() if t > now}

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = hash_password("sitemail timing equaliser")
        return self._dummy_hash

    def _check(self, login: str, password: str) -> AuthResult:
        """Blocking: directory lookups and one scrypt verification, whatever the name."""
        failed = AuthResult(AuthOutcome.FAILED, FAILED_TEXT)
        name = login.strip()
        if not name or len(name) > _MAX_NAME or len(password) > _MAX_PASSWORD or not password:
            verify_password("x", self._dummy())
            return failed
        directory = self._directory
        local_site = directory.local_site
        guid = ""
        site = ""
        if "@" in name:
            owner = directory.lookup(name)
            if owner is not None and owner.kind is ObjectKind.MAILBOX:
                guid, site = owner.guid, owner.site
        else:
            try:
                found = directory.get(name, ObjectKind.MAILBOX)
            except (NotFoundError, ConflictError):
                found = None
            if found is not None and found.site == local_site:
                guid, site = found.guid, found.site  # an alias names a mailbox of this site
        if guid and site != local_site:
            verify_password(password, self._dummy())
            host = self._home_host(site)
            return AuthResult(
                AuthOutcome.ELSEWHERE,
                f"your mailbox is on site {site}: connect to {host}",
                home_site=site,
                home_host=host,
            )
        stored = directory.password_hash(guid) if guid else None
        if stored is None:
            verify_password(password, self._dummy())
            return failed
        if not verify_password(password, stored):
            return failed
        with directory.store.read() as conn:
            mailbox = Directory.by_guid_in(conn, guid)
        if mailbox is None or mailbox.is_deleted:
            return failed
        return AuthResult(
            AuthOutcome.OK,
            "authenticated",
            mailbox=mailbox.guid,
            alias=mailbox.alias,
            addresses=frozenset(p.key for p in mailbox.proxies if p.type == "SMTP"),
            home_site=site,
        )

    def _home_host(self, site: str) -> str:
        """The host name of the site's (first) server: server.site-domain, as it names itself."""
        directory = self._directory
        try:
            domain = directory.routing_domain(
                site
            )  # the site's own domain, as servers name themselves
        except NotFoundError:
            return site
        servers = directory.list_objects(ObjectKind.SERVER, site=site)
        if not servers:
            return domain
        return f"{servers[0].alias.lower()}.{domain}"
