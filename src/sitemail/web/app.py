"""The admin HTTP API: a FastAPI app over AdminService, with token authentication.

One job: turn HTTP into AdminService calls and their values into JSON, like the CLI does for
the command line; no business logic lives in a route. Every route is under `/api/` and needs
`Authorization: Bearer <token>` (the data dir's `admin-token`, compared in constant time); the
OpenAPI document at `/api/openapi.json` too. Every fault answers `{"error", "code"}` JSON with
the status of its `SitemailError` class; nothing reaches the client as a traceback.

Routes are plain `def`s: FastAPI runs them in worker threads, so the database work of an admin
call never blocks the server's event loop it shares. Each request gets its own AdminService
over the one shared store (the store is thread-aware); the config is read once at start.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sitemail.admin.token import METRICS_TOKEN_FILE, ensure_token
from sitemail.admin.wake import ask_attempts, poke
from sitemail.config import load_config
from sitemail.core.clock import Clock
from sitemail.core.errors import ConfigError, SitemailError
from sitemail.queue.attempts import Attempt
from sitemail.store import Store, default_url, open_store, upgrade
from sitemail.web import routes
from sitemail.web.console import PREFIX as CONSOLE_PREFIX
from sitemail.web.console import error_page, mount_console
from sitemail.web.deps import (
    ApiContext,
    ThrottledError,
    UnauthorizedError,
    authenticate,
    authenticate_metrics,
)
from sitemail.web.limits import BodyLimit
from sitemail.web.metrics import CONTENT_TYPE, Metrics
from sitemail.web.models import ErrorOut

__all__ = ["create_app"]

log = logging.getLogger("sitemail.web")

# A code per error class: stable for scripts, whatever the message says.
_CODES = {
    "ConfigError": "config",
    "StoreError": "store",
    "UsageError": "bad_request",
    "InvalidAddressError": "invalid_address",
    "InvalidValueError": "invalid_value",
    "NotFoundError": "not_found",
    "ConflictError": "conflict",
    "DuplicateAddressError": "duplicate_address",
    "PermissionDeniedError": "permission_denied",
}
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    429: "too_many_failures",
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in (
        (400, "malformed request"),
        (401, "missing or wrong token"),
        (404, "no such object"),
        (409, "conflicts with an existing object"),
        (422, "a value is not acceptable"),
        (429, "too many wrong tokens from this address"),
    )
}


def _error(status: int, message: str, code: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message, "code": code}
    if detail is not None:
        body["detail"] = detail
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _on_console(request: Request) -> bool:
    return request.url.path.startswith(CONSOLE_PREFIX + "/")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SitemailError)
    async def sitemail_error(request: Request, exc: SitemailError) -> Response:
        # A broken setup (config, key files) is the server's state, not the caller's fault.
        status = 503 if isinstance(exc, ConfigError) else exc.http_status
        if _on_console(request):
            return error_page(request, status, exc.message)
        return _error(status, exc.message, _CODES.get(type(exc).__name__, "error"))

    @app.exception_handler(UnauthorizedError)
    async def unauthorized(_request: Request, _exc: UnauthorizedError) -> JSONResponse:
        return _error(
            401,
            "missing or wrong token: send 'Authorization: Bearer <token>' (sitemail admin token)",
            "unauthorized",
        )

    @app.exception_handler(ThrottledError)
    async def throttled(request: Request, _exc: ThrottledError) -> Response:
        text = "too many wrong tokens from your address; try again later"
        if _on_console(request):
            return error_page(request, 429, text)
        return _error(429, text, "too_many_failures")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        if _on_console(request):
            return error_page(request, 422, f"{where}: {first['msg']}")
        return _error(422, f"{where}: {first['msg']}", "validation", errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _on_console(request):
            return error_page(request, exc.status_code, str(exc.detail))
        return _error(
            exc.status_code, str(exc.detail), _STATUS_CODES.get(exc.status_code, "http_error")
        )

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.error("admin API internal error: %s: %s", exc.__class__.__name__, exc, exc_info=exc)
        if _on_console(request):
            return error_page(request, 500, f"internal error: {exc.__class__.__name__}")
        return _error(500, f"internal error: {exc.__class__.__name__}", "internal")


def create_app(
    data_dir: Path,
    *,
    wake: Callable[[], object] | None = None,
    store: Store | None = None,
    clock: Clock | None = None,
    attempts: Callable[[], Sequence[Attempt]] | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    """The admin API of the server whose data dir is `data_dir`.

    `wake` nudges the queue after a change that queued mail (default: the data dir's wake
    socket, as the CLI does); `store` lets the server share its own (else one is opened here
    and closed when the app shuts down); `attempts` says what the deliveries in flight are
    doing (default: asked of the running server over the control channel, as the CLI does);
    `metrics` holds the server's counters (default: none counted, the gauges only).
    """
    config = load_config(data_dir)
    owned = store is None
    if store is None:
        store = open_store(config.database_url or default_url(data_dir))
        upgrade(store)
    context = ApiContext(
        config,
        store,
        ensure_token(data_dir),
        wake if wake is not None else (lambda: poke(data_dir)),
        clock,
        attempts=attempts if attempts is not None else (lambda: ask_attempts(data_dir) or []),
        metrics_token=ensure_token(data_dir, METRICS_TOKEN_FILE),
    )
    counted = metrics if metrics is not None else Metrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                context.store.close()

    app = FastAPI(
        title="sitemail admin API",
        version="1",
        description="The administrative operations of one sitemail server (docs/api.md).",
        openapi_url=None,  # served below, behind the token like every /api/ route
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.context = context
    _install_error_handlers(app)
    api = APIRouter(prefix="/api", dependencies=[Depends(authenticate)], responses=ERROR_RESPONSES)
    routes.register(api)

    @api.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    app.include_router(api)

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(authenticate_metrics)])
    def scrape() -> Response:
        """Prometheus's text format: needs the metrics or the admin token (docs/metrics.md)."""
        return Response(counted.scrape(context.service()), media_type=CONTENT_TYPE)

    mount_console(app)
    app.add_middleware(BodyLimit)
    return app
