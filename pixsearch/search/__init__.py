"""Search: query encoding, ANN search over the library's index, result rows."""

from __future__ import annotations

from pixsearch.search.results import ImageHit, TextHit
from pixsearch.search.service import SearchService

__all__ = ["ImageHit", "SearchService", "TextHit"]
