"""What the admin API's routes depend on: the shared context, an AdminService, the token check.

One job: FastAPI dependencies. `Service` gives a route an AdminService over the server's one
store; `authenticate` (on every /api/ route) checks the bearer token in constant time; `Wake`
nudges the queue after a change that queued mail.

Wrong tokens (here and at the console's login) are throttled per client address with the
[auth] settings, like mail logins (core/throttle.py): each is answered after `failure_delay`,
awaited on the event loop (no thread is held, so a flood of guesses cannot take the threads
the API's routes run in), and once `max_failures` are counted, or are in progress, the address
gets 429 at once without its token being compared. The right token is always accepted: it
cannot be guessed (256 bits), and a stranger's flood must not lock the administrator out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import Depends, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sitemail.admin.service import AdminService
from sitemail.admin.token import check_token
from sitemail.config import ServerConfig
from sitemail.core.clock import Clock, SystemClock
from sitemail.core.throttle import FailureThrottle
from sitemail.queue.attempts import Attempt
from sitemail.store import Store

__all__ = [
    "ApiContext",
    "Service",
    "SiteName",
    "ThrottledError",
    "UnauthorizedError",
    "Wake",
    "authenticate",
    "authenticate_metrics",
]


class ApiContext:
    """What every request shares: the config, the store, the clock and how to wake the queue."""

    def __init__(
        self,
        config: ServerConfig,
        store: Store,
        token: str,
        wake: Callable[[], object],
        clock: Clock | None = None,
        *,
        attempts: Callable[[], Sequence[Attempt]] | None = None,
        metrics_token: str = "",
    ) -> None:
        self.config = config
        self.metrics_token = metrics_token  # opens /metrics only (docs/metrics.md)
        self.store = store
        self.token = token
        self.wake = wake
        self.clock = clock
        self.attempts = attempts  # what the server's deliveries in flight are doing
        auth = config.auth
        self.throttle = FailureThrottle(
            clock or SystemClock(),
            limit=auth.max_failures,
            window=auth.window,
            lockout=auth.lockout,
        )

    def service(self) -> AdminService:
        service = AdminService(self.config, self.store, self.clock)
        service.attempts = self.attempts
        return service

    def now(self) -> float:
        return self.clock.now() if self.clock is not None else time.time()

    def token_matches(self, given: str) -> bool:
        return check_token(self.token, given)

    async def wrong_token(self, peer: str) -> None:
        """Count a wrong token from `peer` and answer it late, or raise ThrottledError at once
        when that address has used up its tries."""
        if not self.throttle.admit(peer):
            raise ThrottledError
        self.throttle.release(peer)  # the failure counts in the slot's place
        self.throttle.fail(peer)
        await asyncio.sleep(self.config.auth.failure_delay)


def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


def _service(request: Request) -> AdminService:
    return _context(request).service()


Service = Annotated[AdminService, Depends(_service)]

_bearer = HTTPBearer(auto_error=False, description="The token of `sitemail admin token`.")


class UnauthorizedError(Exception):
    """No token, or the wrong one: answered 401."""


class ThrottledError(Exception):
    """Too many wrong tokens from this client address: answered 429 without checking."""


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else ""


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """A coroutine: the check runs on the loop, never waiting for one of the route threads."""
    context = _context(request)
    if credentials is not None and context.token_matches(credentials.credentials):
        return
    await context.wrong_token(client_address(request))
    raise UnauthorizedError


async def authenticate_metrics(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """/metrics: the metrics token (what Prometheus is given) or the admin token; wrong ones
    are throttled like any other."""
    context = _context(request)
    if credentials is not None:
        given = credentials.credentials
        if context.token_matches(given) or (
            context.metrics_token and check_token(context.metrics_token, given)
        ):
            return
    await context.wrong_token(client_address(request))
    raise UnauthorizedError


def _wake(request: Request) -> Callable[[], object]:
    return _context(request).wake


# Call it after a change that queued mail: the server looks at its queue now.
Wake = Annotated[Callable[[], object], Depends(_wake)]


# A site's directory name in a path (SiteB), as the CLI takes it.
SiteName = Annotated[str, PathParam(min_length=1, max_length=256, description="Directory name.")]
