"""Turning a web query (words, a photo, both, or "more like this") into result rows.

The searching itself is `SearchService`'s; this module only picks the call, holds the search lock,
applies the relevance cut-off and calls the rerank hook, at once or, with `defer_rerank`, later: the
first-stage results go out with a token and `rerank_later` reranks that very result set when the page
(or a client) asks, so no one waits for the reranker to see results. Blocking: call it from a worker
thread.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from pixsearch.errors import ConfigError
from pixsearch.search import ImageHit
from pixsearch.search.engine import SearchOptions, hybrid_search
from pixsearch.web.context import WebContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebQuery:
    text: str | None = None
    image: Image.Image | None = None
    like: int | None = None  # an image id: "more like this"
    vector: np.ndarray | None = None  # a query vector computed earlier (a paged photo search)
    k: int = 10
    offset: int = 0
    rerank: bool = False
    defer_rerank: bool = False  # answer with first-stage results and a token for `rerank_later`


@dataclass
class WebResults:
    hits: list[ImageHit]
    reranked: bool = False
    notes: list[str] = field(default_factory=list)
    no_good_match: bool = False
    best_score: float | None = None
    more: bool = False  # the search filled the page, so a next page may exist
    empty: str | None = None  # why a words query found nothing at all, in a sentence
    rerank_token: str | None = None  # set when the rerank was deferred: pass it to `rerank_later`


@dataclass(frozen=True)
class PendingRerank:
    """A words-only result set as it went out, kept for its deferred rerank."""

    query: WebQuery
    text: str
    results: WebResults


def query_vector(context: WebContext, text: str | None, image: Image.Image | None) -> np.ndarray:
    """One unit query vector from words, a photo, or both (their sum, renormalised, as the CLI does)."""
    text = (text or "").strip() or None
    if text is None and image is None:
        raise ConfigError("give some words to search for, or a photo")
    with context.search_lock:
        parts = []
        if text is not None:
            parts.append(context.search.encode_text([text])[0])
        if image is not None:
            parts.append(context.search.encode_image(image)[0])
    vector = np.sum(parts, axis=0)
    return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)


def run_query(context: WebContext, query: WebQuery) -> WebResults:
    """Search, cut off weak matches, rerank when asked and possible.

    Raises:
        ConfigError: no query, or k/offset out of range; NotFoundError: `like` is not in the library;
        EmptyIndexError: nothing indexed yet.
    """
    text = (query.text or "").strip() or None
    if query.image is not None:
        vector = query_vector(context, text, query.image)
    elif query.vector is not None:
        vector = query.vector
    else:
        vector = None
    if query.like is None and vector is None and text is not None:
        return _words(context, query, text)  # takes the search lock itself
    with context.search_lock:
        if query.like is not None:
            hits = context.search.similar_to(query.like, query.k, query.offset)
        elif vector is not None:
            hits = context.search.vector_to_image(vector, query.k, query.offset)
        else:
            raise ConfigError("give some words to search for, a photo, or an image id for 'more like this'")
    results = WebResults(hits=hits, more=len(hits) == query.k)
    results.best_score = max((hit.score for hit in hits), default=None)
    _cut_off(context, results)
    if query.rerank:
        _rerank(context, query, text, results)
    return results


def _words(context: WebContext, query: WebQuery, text: str) -> WebResults:
    """A word query in the query language: filters, phrases, keywords fused with vectors, the
    relevance cut-off and near-duplicate grouping, all of `hybrid_search`."""
    web = context.options
    options = SearchOptions(
        keyword_weight=web.keyword_weight,
        cutoff_z=web.cutoff_z,
        background=web.background,
        min_score=web.min_score,
        duplicate_threshold=web.duplicate_threshold,
    )
    with context.search_lock:
        found = hybrid_search(context.search, text, query.k, query.offset, options)
    results = WebResults(
        hits=found.hits,
        more=found.total > query.offset + query.k,
        no_good_match=found.no_good_match,
        empty=found.explain(),
    )
    results.best_score = (
        found.best_score if found.best_score is not None else max((h.score for h in found.hits), default=None)
    )
    if results.empty is not None:
        results.notes.append(results.empty)
    if query.rerank:
        _rerank(context, query, text, results)
    return results


def _cut_off(context: WebContext, results: WebResults) -> None:
    floor = context.options.min_score
    if floor is None or not results.hits:
        return
    kept = [hit for hit in results.hits if hit.score >= floor]
    if not kept:
        results.no_good_match = True
        results.notes.append(f"no photo scored above the relevance cut-off {floor:g} (best: {results.best_score:.3f})")
    results.more = results.more and len(kept) == len(results.hits)
    results.hits = kept


def _rerank(context: WebContext, query: WebQuery, text: str | None, results: WebResults) -> None:
    if context.rerank_hook is None:
        results.notes.append("rerank ignored: no reranker is configured on this server")
    elif text is None or query.image is not None or query.like is not None or query.vector is not None:
        results.notes.append("rerank ignored: reranking needs a words-only query")
    elif results.hits and query.defer_rerank:
        pending = PendingRerank(
            query, text, dataclasses.replace(results, hits=list(results.hits), notes=list(results.notes))
        )
        results.rerank_token = context.result_sets.put(pending)
    elif results.hits:
        with context.rerank_lock:
            results.hits = list(context.rerank_hook(text, list(results.hits)))
        results.reranked = True


def rerank_later(context: WebContext, token: str) -> tuple[WebQuery, WebResults]:
    """The reranked version of a result set that went out with `rerank_token`; it stays available, so
    asking again answers again (the reranker's caches make the second time cheap).

    Raises:
        NotFoundError: the token is unknown or has expired.
        ConfigError: the server has no reranker (any more).
    """
    pending = context.result_sets.get(token)
    if context.rerank_hook is None:
        raise ConfigError("no reranker is configured on this server")
    with context.rerank_lock:
        hits = list(context.rerank_hook(pending.text, list(pending.results.hits)))
    results = dataclasses.replace(pending.results, hits=hits, reranked=True, notes=list(pending.results.notes))
    return pending.query, results
