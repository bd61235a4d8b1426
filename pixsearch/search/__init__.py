"""Search: query encoding, ANN search over the library's index, result rows.

The names below load on first use, so that `pixsearch.search.query` (the query language, which
the CLI's help prints) can be imported without FAISS, NumPy or the database layer.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pixsearch.search.results import ImageHit, TextHit
    from pixsearch.search.service import SearchService

__all__ = ["ImageHit", "SearchService", "TextHit"]
_HOMES = {
    "ImageHit": "pixsearch.search.results",
    "TextHit": "pixsearch.search.results",
    "SearchService": "pixsearch.search.service",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
