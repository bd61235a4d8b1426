"""The web application: JSON API, clip-retrieval compatible /knn-service, server-rendered pages."""

from __future__ import annotations

from pixsearch.web.app import create_app
from pixsearch.web.options import WebOptions

__all__ = ["WebOptions", "create_app"]
