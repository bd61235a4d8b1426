"""Dependencies of the routers, as `Annotated` aliases."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.templating import Jinja2Templates

from pixsearch.storage.schema import ImageRow
from pixsearch.web.context import WebContext

MAX_ID = 2**62


def get_context(request: Request) -> WebContext:
    return request.app.state.context


def get_templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


ContextDep = Annotated[WebContext, Depends(get_context)]
TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]


def get_image_row(context: ContextDep, image_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> ImageRow:
    """The library row of `image_id`; 404 when there is none. Files are only ever found through this."""
    return context.image_row(image_id)


ImageRowDep = Annotated[ImageRow, Depends(get_image_row)]

_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="needed for changes to the library")
_bearer = HTTPBearer(auto_error=False, description="the API key as a bearer token, instead of X-API-Key")


def get_api_key(
    key: Annotated[str | None, Depends(_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    return key or (bearer.credentials if bearer else None)


ApiKeyDep = Annotated[str | None, Depends(get_api_key)]


def may_write(context: WebContext, key: str | None) -> bool:
    """Whether writes are on and `key` is the server's API key (compared in constant time)."""
    expected = context.options.api_key
    return expected is not None and key is not None and hmac.compare_digest(key.encode(), expected.encode())


def check_write(context: WebContext, key: str | None) -> None:
    """Refuse a change to the library unless writes are on and `key` is the server's API key.

    Raises:
        HTTPException: 403 when the server has no API key (writes off), 401 for a missing or wrong key.
    """
    if context.options.api_key is None:
        raise HTTPException(403, "changes are switched off on this server (start it with an API key to allow them)")
    if not may_write(context, key):
        raise HTTPException(
            401, "this change needs the server's API key (X-API-Key header)", {"WWW-Authenticate": "Bearer"}
        )
