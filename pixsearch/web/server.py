"""Running the app with uvicorn: `serve(...)` for the CLI, `make_server(...)` to run it in a thread."""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from pixsearch.settings import Settings
from pixsearch.web.app import create_app
from pixsearch.web.context import RerankHook, TagsHook
from pixsearch.web.options import WebOptions

log = logging.getLogger(__name__)


def make_server(
    settings: Settings,
    options: WebOptions | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    rerank_hook: RerankHook | None = None,
    tags_hook: TagsHook | None = None,
    log_level: str = "info",
) -> uvicorn.Server:
    """A uvicorn server for the app (not started: call `.run()`, or set `.should_exit` to stop it).

    Raises:
        ConfigError: invalid settings or options. LibraryError: the library cannot be opened.
    """
    if not _is_loopback(host):
        log.warning(
            "listening on %s: anyone who can reach this machine on port %d can search and view your photos", host, port
        )
    app = create_app(settings, options, rerank_hook=rerank_hook, tags_hook=tags_hook)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, workers=1, server_header=False)
    return uvicorn.Server(config)


def serve(
    settings: Settings,
    options: WebOptions | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    rerank_hook: RerankHook | None = None,
    tags_hook: TagsHook | None = None,
    log_level: str = "info",
) -> None:
    """Serve the library until interrupted (Ctrl-C). Binds to 127.0.0.1 unless told otherwise."""
    make_server(settings, options, host, port, rerank_hook=rerank_hook, tags_hook=tags_hook, log_level=log_level).run()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
