"""A ceiling on request bodies for the admin API and the console.

One job: answer 413 to a body larger than `MAX_BODY`, before a route or the form parser holds
it in memory. Starlette reads a form or JSON body whole, and the login form is reachable
without a token, so without this anyone who can reach the port could make the server buffer
gigabytes. A declared Content-Length over the limit is refused at once; a chunked body is
counted as it arrives and cut off when it passes the limit.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_BODY", "BodyLimit"]

MAX_BODY = 2 * 1024 * 1024  # far above any admin request (a recipient with 1,000 addresses)


class _TooLargeError(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for a body over `limit` bytes."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        seen = 0
        exceeded = False  # the app may turn our error into its own (FastAPI: a 400)
        replaced = False

        async def counted() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    exceeded = True
                    raise _TooLargeError
            return message

        async def watched(message: Message) -> None:
            nonlocal replaced
            if exceeded:
                # Whatever the app answers to a body cut off, the answer is ours: 413.
                if not replaced and message["type"] == "http.response.start":
                    replaced = True
                    await self._refuse(send)
                return
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLargeError:
            if not replaced:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {"error": f"request body over {self.limit} bytes", "code": "too_large"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
