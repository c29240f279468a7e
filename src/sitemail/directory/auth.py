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
- Throttling keyed on what is attacked and where from (`core.throttle`): failures are counted
  per client address and per account (the mailbox, or the name tried when there is none), and
  `max_failures` within `window` seconds lock that address, or that account, for `lockout`
  seconds. An attempt takes a slot in both before its password is checked, so parallel
  attempts count as a sequence does; while locked, or while the slots are taken, passwords are
  not even checked (brute force gets no answers) and the reply names no user. A success
  forgets only its own earlier failures (that account from that address): never another
  account's. An address that logged in as an account before is not shut out by that
  account's lock, so a stranger's guesses cannot lock the owner out of their own mailbox.
- Password hashing (scrypt) runs in a small pool of its own threads, never on the event loop
  and never more at once than there are cores: a flood of logins waits there and cannot take
  the threads that the rest of the server uses for its database work.
Transport rules (TLS before AUTH) belong to each protocol; this module never sees a socket.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from sitemail.config.model import AuthConfig
from sitemail.core.clock import Clock
from sitemail.core.errors import ConflictError, NotFoundError
from sitemail.core.throttle import FailureThrottle
from sitemail.directory.model import ObjectKind
from sitemail.directory.passwords import hash_password, verify_password
from sitemail.directory.service import Directory

__all__ = [
    "FAILED_TEXT",
    "LOCKED_TEXT",
    "MAX_PASSWORD",
    "AuthOutcome",
    "AuthResult",
    "Authenticates",
    "Authenticator",
]

FAILED_TEXT = "authentication failed"
LOCKED_TEXT = "too many failed logins; try again later"
_MAX_NAME = 320  # an address at most (RFC 5321 4.5.3.1.3)
MAX_PASSWORD = 1024
_MAX_KNOWN = 100_000  # (account, address) pairs remembered as having logged in
_KNOWN_FOR = 30 * 86400.0  # an address that logged in as an account stays known this long


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


class Authenticates(Protocol):
    """What a protocol needs to log a client in: the server's `Authenticator`, or, in an IMAP
    or POP3 worker process, its proxy that asks the server (sitemail.frontends)."""

    async def authenticate(self, login: str, password: str, peer_ip: str) -> AuthResult: ...


@dataclass(frozen=True, slots=True)
class _Account:
    """Who a login name designates: the throttling key, and the mailbox when there is one."""

    key: str  # "mailbox:<guid>", or "name:<the name tried>" for a name that is no mailbox here
    guid: str = ""
    site: str = ""


class Authenticator:
    """Shared by every client-access listener of one server (one throttling table)."""

    def __init__(
        self,
        directory: Directory,
        clock: Clock,
        settings: AuthConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        hash_workers: int | None = None,
    ) -> None:
        self._sleep = sleep
        self._directory = directory
        self._clock = clock
        self._settings = settings
        self._by_address, self._by_account = (
            FailureThrottle(
                clock,
                limit=settings.max_failures,
                window=settings.window,
                lockout=settings.lockout,
            )
            for _ in range(2)
        )
        self._known: dict[tuple[str, str], float] = {}  # (account key, address) -> last login
        workers = hash_workers or max(1, os.cpu_count() or 1)
        self._hashing = ThreadPoolExecutor(workers, thread_name_prefix="sitemail-auth")
        self._dummy_hash: str | None = None

    def is_locked(self, peer_ip: str) -> bool:
        """Whether this client address is locked out now."""
        return self._by_address.locked(peer_ip)

    async def authenticate(self, login: str, password: str, peer_ip: str) -> AuthResult:
        """Check a login; every refusal is answered only after `failure_delay`."""
        if not self._by_address.admit(peer_ip):
            return await self._refuse()
        account: _Account | None = None
        held = False  # a slot of the account's count is taken
        try:
            account = await asyncio.to_thread(self._account, login)
            held = self._by_account.admit(account.key)
            if not held and not self._is_known(account.key, peer_ip):
                result = None  # the account is locked, and this is not its owner's address
            else:
                result = await asyncio.get_running_loop().run_in_executor(
                    self._hashing, self._check, account, password
                )
        finally:  # the slots end with the check; a failure now counts in their place
            self._by_address.release(peer_ip)
            if held and account is not None:
                self._by_account.release(account.key)
        if result is None:
            return await self._refuse()
        if result.outcome is AuthOutcome.FAILED:
            self._by_account.fail(account.key, peer_ip)
            self._by_address.fail(peer_ip, account.key)
            await self._sleep(self._settings.failure_delay)
        elif result.ok:
            self._by_account.forgive(account.key, peer_ip)
            self._by_address.forgive(peer_ip, account.key)
            self._remember(account.key, peer_ip)
        return result

    async def _refuse(self) -> AuthResult:
        await self._sleep(self._settings.failure_delay)
        return AuthResult(AuthOutcome.LOCKED, LOCKED_TEXT)

    def _is_known(self, key: str, peer_ip: str) -> bool:
        when = self._known.get((key, peer_ip))
        return when is not None and self._clock.now() - when < _KNOWN_FOR

    def _remember(self, key: str, peer_ip: str) -> None:
        self._known.pop((key, peer_ip), None)
        self._known[(key, peer_ip)] = self._clock.now()
        while len(self._known) > _MAX_KNOWN:  # bounded: the oldest login is forgotten first
            del self._known[next(iter(self._known))]

    def close(self) -> None:
        """Stop the hashing threads (a server that stops)."""
        self._hashing.shutdown(wait=False, cancel_futures=True)

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = hash_password("sitemail timing equaliser")
        return self._dummy_hash

    def _account(self, login: str) -> _Account:
        """Blocking (directory lookups, no hashing): the account a login name designates."""
        name = login.strip()
        if not name or len(name) > _MAX_NAME:
            return _Account("name:")  # every unusable name shares one key
        directory = self._directory
        guid = site = ""
        if "@" in name:
            owner = directory.lookup(name)
            if owner is not None and owner.kind is ObjectKind.MAILBOX:
                guid, site = owner.guid, owner.site
        else:
            try:
                found = directory.get(name, ObjectKind.MAILBOX)
            except (NotFoundError, ConflictError):
                found = None
            if found is not None and found.site == directory.local_site:
                guid, site = found.guid, found.site  # an alias names a mailbox of this site
        if guid:
            return _Account(f"mailbox:{guid}", guid, site)
        return _Account(f"name:{name.lower()}")

    def _check(self, account: _Account, password: str) -> AuthResult:
        """Blocking: one scrypt verification whatever the account, then the mailbox."""
        failed = AuthResult(AuthOutcome.FAILED, FAILED_TEXT)
        if not account.guid or len(password) > MAX_PASSWORD or not password:
            verify_password(password[:MAX_PASSWORD] or "x", self._dummy())
            return failed
        directory = self._directory
        guid, site = account.guid, account.site
        if site != directory.local_site:
            verify_password(password, self._dummy())
            host = self._home_host(site)
            return AuthResult(
                AuthOutcome.ELSEWHERE,
                f"your mailbox is on site {site}: connect to {host}",
                home_site=site,
                home_host=host,
            )
        stored = directory.password_hash(guid)
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
