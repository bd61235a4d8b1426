"""The one place errors become HTTP status codes: `{"detail": "<one-line reason>"}`, never a traceback.

Pages (not /api/...) asked for by a browser get the same status with an HTML error page. An error
no handler expects is a 500 made inside the app (`CatchAll`), so the server never sees it and the
client's keep-alive connection stays usable.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixsearch.errors import (
    BadImageError,
    ConfigError,
    EmptyIndexError,
    FileAccessError,
    LibraryError,
    ModelLoadError,
    ModelNotFoundError,
    NotFoundError,
    PixsearchError,
)
from pixsearch.web.knn_query import ImageUrlRefused
from pixsearch.web.limits import PayloadTooLarge
from pixsearch.web.models import ModelsBusy, RoleNotConfigured

log = logging.getLogger(__name__)

# most specific first: the first matching class decides
STATUS: tuple[tuple[type[Exception], int], ...] = (
    (NotFoundError, 404),
    (FileAccessError, 404),
    (RoleNotConfigured, 404),
    (BadImageError, 422),
    (ConfigError, 400),
    (ImageUrlRefused, 403),
    (PayloadTooLarge, 413),
    (EmptyIndexError, 409),
    (LibraryError, 409),
    (ModelNotFoundError, 503),
    (ModelLoadError, 503),
    (ModelsBusy, 503),
)

_API_PREFIXES = ("/api/", "/knn-service", "/metadata", "/indices-list", "/docs", "/openapi.json")


def one_line(text: object) -> str:
    return " ".join(str(text).split()) or "error"


def _wants_html(request: Request) -> bool:
    path = request.url.path[len(request.scope.get("root_path", "")) :]
    return not path.startswith(_API_PREFIXES) and "text/html" in request.headers.get("accept", "")


def error_response(request: Request, status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    if _wants_html(request):
        templates = request.app.state.templates
        return templates.TemplateResponse(
            request, "error.html", {"status": status, "detail": detail}, status_code=status, headers=headers
        )
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def status_of(error: Exception) -> int:
    return next((code for cls, code in STATUS if isinstance(error, cls)), 500)


# the errors that carry a message meant for the client
CLIENT_ERRORS = (PixsearchError, RoleNotConfigured, ModelsBusy, ImageUrlRefused, PayloadTooLarge)


async def _known(request: Request, error: Exception) -> Response:
    status = status_of(error)
    if status >= 500:
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(error).__name__, error)
    headers = {"Retry-After": "5"} if isinstance(error, ModelsBusy) else None
    return error_response(request, status, one_line(error), headers)


async def _http(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return error_response(request, error.status_code, one_line(error.detail), dict(error.headers or {}) or None)


async def _validation(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0] if error.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = first.get("msg", "invalid request")
    if first.get("type") == "json_invalid":
        message = f"body is not valid JSON ({first.get('ctx', {}).get('error', 'decode error')})"
        where = ""
    return error_response(request, 422, one_line(f"{where}: {message}" if where else message))


INTERNAL = "internal server error; the server log has the details"


async def _unexpected(request: Request, error: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return error_response(request, 500, INTERNAL)


class CatchAll:
    """Answers an exception that no handler took with a clean 500, inside the app.

    Starlette's own last-resort handler answers too, but then raises the exception again to the
    server, and uvicorn closes the connection: the client's next request on it fails.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as error:
            if started:
                raise  # half a response is out: only closing the connection can end it
            request = Request(scope)
            log.error("%s %s failed", request.method, request.url.path, exc_info=error)
            await error_response(request, 500, INTERNAL)(scope, receive, send)


def install(app: FastAPI) -> None:
    """The exception handlers, and `CatchAll` outside every other middleware (call after adding them)."""
    for cls in CLIENT_ERRORS:
        app.add_exception_handler(cls, _known)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(CatchAll)
