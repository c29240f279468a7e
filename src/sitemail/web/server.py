"""Serve the admin API inside the server's own event loop (uvicorn, no thread, no process).

One job: bind the API's listening socket (so a port in use is a clear `ConfigError` at start,
not uvicorn's `sys.exit`), run uvicorn on it until cancelled, then shut it down gracefully.
Signals stay with `site.py`: uvicorn's own signal capture is switched off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from sitemail.core.errors import ConfigError

__all__ = ["bind_api_socket", "serve_api"]

log = logging.getLogger("sitemail.web")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # SIGINT/SIGTERM cancel the whole server (site.py); we are cancelled with it


def bind_api_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, or a ConfigError saying why not."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot serve the admin API on {host} port {port}: {exc.strerror} "
            "(change [admin] listen / port in sitemail.toml, or port = 0 to switch it off)"
        ) from exc
    sock.setblocking(False)
    return sock


async def serve_api(app: FastAPI, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
    """Serve `app` on the bound `sock` (over TLS with `tls`: the server's own context, so a
    certificate installed by `sitemail tls set` is used here too) until cancelled; then close
    it and let running requests finish (a few seconds at most)."""
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,  # our logging, not uvicorn's dictConfig
        access_log=False,
        ws="none",
        timeout_graceful_shutdown=5,
    )
    config.load()
    config.ssl = tls  # uvicorn takes a context as it is: ours, not one made from file names
    server = _Server(config)
    inner = asyncio.create_task(server.serve(sockets=[sock]), name="admin-api")
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls is not None else "http"
    log.info("admin API on %s://%s:%d/api/", scheme, host, port)
    try:
        await asyncio.shield(inner)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await inner
        raise
    finally:
        sock.close()
