"""What the admin API's routes depend on: the shared context, an AdminService, the token check.

One job: FastAPI dependencies. `Service` gives a route an AdminService over the server's one
store; `authenticate` (on every /api/ route) checks the bearer token in constant time; `Wake`
nudges the queue after a change that queued mail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import Depends, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sitemail.admin.service import AdminService
from sitemail.admin.token import check_token
from sitemail.config import ServerConfig
from sitemail.core.clock import Clock
from sitemail.queue.attempts import Attempt
from sitemail.store import Store

__all__ = [
    "ApiContext",
    "Service",
    "SiteName",
    "UnauthorizedError",
    "Wake",
    "authenticate",
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
    ) -> None:
        self.config = config
        self.store = store
        self.token = token
        self.wake = wake
        self.clock = clock
        self.attempts = attempts  # what the server's deliveries in flight are doing

    def service(self) -> AdminService:
        service = AdminService(self.config, self.store, self.clock)
        service.attempts = self.attempts
        return service


def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


def _service(request: Request) -> AdminService:
    return _context(request).service()


Service = Annotated[AdminService, Depends(_service)]

_bearer = HTTPBearer(auto_error=False, description="The token of `sitemail admin token`.")


class UnauthorizedError(Exception):
    """No token, or the wrong one: answered 401."""


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if credentials is None or not check_token(_context(request).token, credentials.credentials):
        raise UnauthorizedError


def _wake(request: Request) -> Callable[[], object]:
    return _context(request).wake


# Call it after a change that queued mail: the server looks at its queue now.
Wake = Annotated[Callable[[], object], Depends(_wake)]


# A site's directory name in a path (SiteB), as the CLI takes it.
SiteName = Annotated[str, PathParam(min_length=1, max_length=256, description="Directory name.")]
