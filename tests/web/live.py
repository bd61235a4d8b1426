"""A real uvicorn server on a free loopback port, in a thread, for the browser and connection tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pixsearch.settings import Settings
from pixsearch.web.server import make_server


@contextmanager
def live_server(
    settings: Settings, options: Any, prepare: Callable[[Any], object] | None = None, **kwargs: Any
) -> Iterator[int]:
    """Serve until the block ends; yields the port. `prepare(app)` runs before the server starts."""
    server = make_server(settings, options, port=0, **{"log_level": "warning", **kwargs})
    if prepare is not None:
        prepare(server.config.app)
    server.config.install_signal_handlers = False  # not the main thread
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(400):  # bounded: up to 20 s for the socket to open
        if server.started or not thread.is_alive():
            break
        started.wait(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
