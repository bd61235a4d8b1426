"""A cap on request bodies, applied before any parsing: uploads, multipart forms and JSON alike."""

from __future__ import annotations

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class PayloadTooLarge(ValueError):
    """An upload (a file, a base64 image, a download) is over the server's limit: 413."""


class BodyLimit:
    """Answers 413 when a body is (or, streamed without a length, turns out to be) over `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self) -> str:
        return f"request body is over the limit of {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                await JSONResponse({"detail": "Content-Length is not a number"}, 400)(scope, receive, send)
                return
            if too_big:
                await JSONResponse({"detail": self._detail()}, 413)(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI lets an HTTPException from body reading through to the handlers
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counted, send)
