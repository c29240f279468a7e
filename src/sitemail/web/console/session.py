"""The console's browser session and its CSRF token, both derived from the admin token.

One job: say whether a browser is logged in, and whether a form it posts was made by us.
No state is kept on the server: the session cookie is `issued.nonce.mac`, where mac is an
HMAC-SHA256 keyed by the admin token over ("session", issued, nonce); the CSRF token of a
session is the HMAC over ("csrf", nonce). So a new admin token (delete `admin-token`, restart)
logs every browser out, a session ends after `SESSION_SECONDS`, and a page from another
origin can neither read the CSRF token (the cookie is HttpOnly, the token is only in our pages)
nor post without it (the cookie is also SameSite=Strict).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = [
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "Session",
    "check_csrf",
    "new_session",
    "read_session",
]

SESSION_COOKIE = "sitemail_session"
SESSION_SECONDS = 12 * 3600  # a working day; then the token is asked for again


@dataclass(frozen=True, slots=True)
class Session:
    cookie: str  # the cookie's value
    nonce: str
    issued: int
    csrf: str  # the token every form and htmx request of this session carries


def _mac(key: str, *parts: str) -> str:
    digest = hmac.new(key.encode(), "|".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _session(key: str, issued: int, nonce: str) -> Session:
    cookie = f"{issued}.{nonce}.{_mac(key, 'session', str(issued), nonce)}"
    return Session(cookie, nonce, issued, _mac(key, "csrf", nonce))


def new_session(key: str, now: float) -> Session:
    """A session made now for a browser that showed the admin token `key`."""
    return _session(key, int(now), secrets.token_urlsafe(16))


def read_session(key: str, cookie: str | None, now: float) -> Session | None:
    """The session a cookie carries, or None when it is missing, forged or expired."""
    if not cookie or len(cookie) > 200:
        return None
    parts = cookie.split(".")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    issued, nonce = int(parts[0]), parts[1]
    session = _session(key, issued, nonce)
    if not hmac.compare_digest(session.cookie, cookie):
        return None
    if not issued <= now < issued + SESSION_SECONDS:
        return None
    return session


def check_csrf(session: Session, presented: str | None) -> bool:
    """Whether a posted form (or htmx request) carries this session's CSRF token."""
    return bool(presented) and hmac.compare_digest(session.csrf, presented or "")
