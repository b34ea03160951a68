"""`BodySizeLimit`: request bodies over ``max_bytes`` are refused with 413 before any route runs.

The limit is checked on the declared ``Content-Length`` and again on the bytes actually
received (a chunked upload declares none), so no oversized body is ever parsed.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deltamem_agents.server.errors import APIError, error_response


class BodySizeLimit:
    """Pure ASGI middleware: buffer the body up to ``max_bytes``, then hand it to the app."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self, size: int | None) -> APIError:
        what = f"{size} bytes" if size is not None else f"more than {self.max_bytes} bytes"
        return APIError(
            413,
            f"the request body is {what}, over this server's limit of {self.max_bytes} bytes: send only "
            "the new messages (a session remembers earlier ones), split documents, or raise --max-request-bytes",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await error_response(APIError(400, "the Content-Length header is not a number"))(scope, receive, send)
                return
            if size > self.max_bytes:
                await error_response(self._too_large(size))(scope, receive, send)
                return
        parts: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending its body
                return
            body = message.get("body", b"")
            received += len(body)
            if received > self.max_bytes:
                await error_response(self._too_large(None))(scope, receive, send)
                return
            parts.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


__all__ = ["BodySizeLimit"]
