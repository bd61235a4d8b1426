"""`OpenFileResponse`: send a file that is already open, so what is sent is exactly what was checked.

`FileResponse(path)` opens the path again when it sends, following whatever link was swapped in
since; this sends from the open handle instead, and closes it when done.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import BinaryIO
from urllib.parse import quote

from anyio import to_thread
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

CHUNK = 256 * 1024


def content_disposition(kind: str, filename: str) -> str:
    """`inline` or `attachment` with the file name, quoted as RFC 6266 asks for a non-ASCII one."""
    quoted = quote(filename)
    return f"{kind}; filename*=utf-8''{quoted}" if quoted != filename else f'{kind}; filename="{filename}"'


class OpenFileResponse(StreamingResponse):
    """The bytes of `handle` as it was when the response was made (its length then), then closes it."""

    def __init__(self, handle: BinaryIO, media_type: str, headers: Mapping[str, str] | None = None) -> None:
        self.handle = handle
        self.size = os.fstat(handle.fileno()).st_size
        super().__init__(
            self._chunks(), media_type=media_type, headers={**(headers or {}), "content-length": str(self.size)}
        )

    async def _chunks(self) -> AsyncIterator[bytes]:
        left = self.size
        while left > 0:
            chunk = await to_thread.run_sync(self.handle.read, min(CHUNK, left))
            if not chunk:
                break  # the file shrank while being sent; the server ends the connection (length unmet)
            left -= len(chunk)
            yield chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.handle.close()
