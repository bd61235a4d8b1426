"""`create_app`: settings and web options checked, the library opened, routers and handlers installed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from pixsearch import __version__
from pixsearch.settings import Settings
from pixsearch.web import handlers, openapi
from pixsearch.web.context import RerankHook, TagsHook, WebContext
from pixsearch.web.limits import BodyLimit
from pixsearch.web.options import WebOptions
from pixsearch.web.routers import health, images, knn, pages, rerank, search
from pixsearch.web.schemas import KnnRequest, MetadataRequest

log = logging.getLogger(__name__)

HERE = Path(__file__).parent

DESCRIPTION = """Search your photos by words or by a photo; captions, tags, questions and statement checks on each result.

Reading is open. Changes to the library (setting or regenerating a caption, adding, confirming or
removing a tag) need the server's API key in an `X-API-Key` header (or as a bearer token); a caption
generated for a caller without it is shown but not stored. Only regular files below the folders the
library indexed are ever served, never through a link. Every error is `{"detail": "<one-line reason>"}`
with a 4xx status (503 when a model cannot be loaded or is busy; 500, same shape, for a server fault).

`POST /knn-service`, `GET /indices-list` and `POST /metadata` follow clip-retrieval's back end, so its
client and front end work against this server.
"""


def create_app(
    settings: Settings,
    options: WebOptions | None = None,
    *,
    rerank_hook: RerankHook | None = None,
    tags_hook: TagsHook | None = None,
) -> FastAPI:
    """The web application over the library `settings` name. Opens (creating if needed) the library now.

    Args:
        settings: library, database, device and pixel limit.
        options: web options (models per role, API key, limits); defaults to `WebOptions()`.
        rerank_hook: `(query, hits) -> hits` reordering a page of hits; `rerank=true` is ignored without it.
        tags_hook: `image_id -> [(tag, score)]` shown instead of the library's stored tags (read-only).

    Raises:
        ConfigError: a setting or option is invalid. LibraryError: the library cannot be opened.
    """
    options = options or WebOptions()
    settings.check()
    options.check()
    context = WebContext(settings, options, rerank_hook=rerank_hook, tags_hook=tags_hook)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        log.info("serving library %s", context.library.root)
        try:
            yield
        finally:
            context.close()

    app = FastAPI(
        title="pixsearch",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served below from the app's own files: FastAPI's default loads Swagger UI from a CDN
        redoc_url=None,
    )
    app.state.context = context
    app.state.templates = Jinja2Templates(directory=HERE / "templates")
    # base64 in /knn-service makes an image a third bigger; forms add a little
    app.add_middleware(BodyLimit, max_bytes=options.max_upload_bytes * 4 // 3 + 1_000_000)
    if options.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(options.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["*"],
        )
    handlers.install(app)
    for module in (health, search, rerank, images, knn, pages):
        app.include_router(module.router)
    openapi.install(app, bodies=(KnnRequest, MetadataRequest))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        """Swagger UI (swagger-ui-dist, Apache-2.0, see static/swagger-ui.NOTICE) from /static, so the
        API documentation works on a machine without a network."""
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title="pixsearch API",
            swagger_js_url=f"{root}/static/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/static/swagger-ui.css",
            swagger_favicon_url=f"{root}/static/swagger-ui-favicon.png",
        )

    return app
