"""Hybrid search: the query language, filters, keyword and vector rankings fused by reciprocal
rank fusion, a relevance cut-off, and near-duplicate grouping. Reads only."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from pixsearch.errors import ConfigError
from pixsearch.search import filters as sql_filters
from pixsearch.search.fusion import group_near_duplicates, reciprocal_rank_fusion
from pixsearch.search.query import ParsedQuery, parse_query
from pixsearch.search.results import ImageHit
from pixsearch.search.service import SearchService, check_k
from pixsearch.storage import keywords
from pixsearch.storage.library import IMAGES
from pixsearch.storage.schema import Embedding, ImageRow

STOPWORDS = frozenset("a an and are as at be by for from in is it of on or the to with".split())


@dataclass(frozen=True)
class SearchOptions:
    keyword_weight: float = 1.0  # RRF weight of the keyword ranking; the vector ranking weighs 1
    rrf_k: int = 60
    cutoff_z: float | None = 2.0  # keep vector hits this many std above the query's library mean
    min_score: float | None = None  # and/or above this absolute similarity
    duplicate_threshold: float | None = 0.95  # collapse results this similar; None: never
    pool: int = 200  # candidates taken from each ranking before fusion

    def __post_init__(self) -> None:
        if self.keyword_weight < 0:
            raise ConfigError(f"keyword weight must be 0 or more, got {self.keyword_weight}")
        if self.duplicate_threshold is not None and not 0 < self.duplicate_threshold <= 1:
            raise ConfigError(f"duplicate threshold must be in (0, 1], got {self.duplicate_threshold}")


@dataclass
class SearchResult:
    hits: list[ImageHit]
    no_good_match: bool  # something was asked, nothing passed the relevance cut-off
    query: ParsedQuery
    cutoff: float | None = None
    best_score: float | None = None  # the best vector similarity, before the cut-off


def hybrid_search(
    service: SearchService, text: str, k: int = 10, offset: int = 0, options: SearchOptions | None = None
) -> SearchResult:
    """Run a query written in the query language (see `pixsearch.search.query`)."""
    check_k(k, offset)
    options = options or SearchOptions()
    parsed = parse_query(text)
    if not (parsed.has_vector or parsed.phrases or parsed.filters):
        raise ConfigError("empty query: give some words, a phrase or a filter")
    pool = max(options.pool, 3 * (k + offset))
    library = service.library
    with library.session() as session:
        allowed = sql_filters.matching_ids(session, parsed.filters)
        excluded = _excluded(session, parsed, pool * 50)
    vector_ranking, cutoff, vector, best = [], None, None, None
    if parsed.has_vector:
        vector = _query_vector(service, parsed)
        vector_ranking, cutoff, best = _vector_ranking(service, vector, allowed, excluded, pool, options)
    keyword_ranking, keyword_scores = _keyword_ranking(service, parsed, allowed, excluded, pool)
    if parsed.phrases:  # a quoted phrase must appear
        vector_ranking = [i for i in vector_ranking if i in keyword_scores]
    if vector_ranking or keyword_ranking:
        order = reciprocal_rank_fusion([vector_ranking, keyword_ranking], [1.0, options.keyword_weight], options.rrf_k)
    elif not parsed.has_vector and not parsed.phrases and allowed is not None:
        with library.session() as session:
            order = sql_filters.newest_first(session, allowed - excluded, pool)
    else:
        order = []
    hits = _hits(service, order, vector, keyword_scores)
    if options.duplicate_threshold is not None and hits:
        hits = _collapse(service, hits, options.duplicate_threshold)
    return SearchResult(hits[offset : offset + k], not hits, parsed, cutoff, best)


def _excluded(session, parsed: ParsedQuery, limit: int) -> set[int]:
    if not parsed.exclude:
        return set()
    found = keywords.search(session, keywords.KeywordQuery(any_of=parsed.exclude), limit)
    return {image_id for image_id, _ in found}


def _query_vector(service: SearchService, parsed: ParsedQuery) -> np.ndarray:
    weights = np.asarray([w for w, _ in parsed.terms], dtype=np.float32)
    vectors = service.encode_text([t for _, t in parsed.terms])
    combined = (weights[:, None] * vectors).sum(axis=0)
    norm = float(np.linalg.norm(combined))
    if norm < 1e-6:
        raise ConfigError("the query's terms cancel out: nothing is left to search for")
    return combined / norm


def _vector_ranking(service, vector, allowed, excluded, pool, options):
    index = service.index(IMAGES)
    total = len(index)
    if allowed is not None and len(allowed) <= max(20 * pool, total // 20):
        ranked = _exact(service, vector, allowed - excluded)  # selective filter: score just those
    else:
        fetch = pool * 2
        while True:  # over-fetch until enough pass the filters, or the index is exhausted
            scores, ids = index.search(vector[None, :].astype(np.float32), min(fetch, total))
            pairs = [(int(e), float(s)) for e, s in zip(ids[0], scores[0], strict=True) if e >= 0]
            image_of = service.image_ids_of([e for e, _ in pairs])
            ranked = [
                (image_of[e], s)
                for e, s in pairs
                if e in image_of and image_of[e] not in excluded and (allowed is None or image_of[e] in allowed)
            ]
            if len(ranked) >= pool or fetch >= total:
                break
            fetch *= 4
    best = ranked[0][1] if ranked else None
    cutoff = _cutoff(service, vector, options)
    if cutoff is not None:
        ranked = [(i, s) for i, s in ranked if s >= cutoff]
    return [i for i, _ in ranked[:pool]], cutoff, best


def _stored_vectors(service: SearchService, image_ids=None, limit: int | None = None) -> tuple[list[int], np.ndarray]:
    query = select(Embedding.image_id, Embedding.vector).where(Embedding.model_key == service.model.key)
    if image_ids is not None:
        query = query.where(Embedding.image_id.in_(list(image_ids)))
    if limit is not None:
        query = query.order_by(Embedding.id).limit(limit)
    with service.library.session() as session:
        rows = session.execute(query).all()
    if not rows:
        return [], np.zeros((0, service.model.dim), dtype=np.float32)
    vectors = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(len(rows), -1)
    return [image_id for image_id, _ in rows], vectors


def _exact(service, vector, ids) -> list[tuple[int, float]]:
    image_ids, vectors = _stored_vectors(service, ids)
    scores = vectors @ vector
    return [(image_ids[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")]


def _cutoff(service: SearchService, vector: np.ndarray, options: SearchOptions) -> float | None:
    """The relevance cut-off for this query: `z` standard deviations above its mean similarity to
    (a sample of) the library, so a query that matches nothing in particular returns nothing."""
    bounds = [options.min_score] if options.min_score is not None else []
    if options.cutoff_z is not None:
        _, sample = _stored_vectors(service, limit=4096)
        if len(sample) >= 8:
            scores = sample @ vector
            bounds.append(float(scores.mean() + options.cutoff_z * scores.std()))
    return max(bounds) if bounds else None


def _keyword_ranking(service, parsed: ParsedQuery, allowed, excluded, pool):
    words = tuple(w for w in parsed.words if w not in STOPWORDS)
    query = keywords.KeywordQuery(include=parsed.phrases, any_of=() if parsed.phrases else words)
    with service.library.session() as session:
        found = keywords.search(session, query, pool * 4)
    found = [(i, s) for i, s in found if i not in excluded and (allowed is None or i in allowed)][:pool]
    return [i for i, _ in found], dict(found)


def _hits(service, order: list[int], vector: np.ndarray | None, keyword_scores: dict[int, float]) -> list[ImageHit]:
    """Rows in fused order; `score` is always the cosine similarity to the query vector (keyword
    matches included), so it means the same with or without keywords and feeds reranking fusion."""
    if not order:
        return []
    with service.library.session() as session:
        rows = {r.id: r for r in session.execute(select(ImageRow).where(ImageRow.id.in_(order))).scalars()}
    similarity: dict[int, float] = {}
    if vector is not None:
        ids, vectors = _stored_vectors(service, order)
        similarity = dict(zip(ids, (vectors @ vector).tolist(), strict=True))
    return [
        ImageHit(
            r.id,
            r.path,
            similarity.get(r.id, 0.0),
            r.width,
            r.height,
            r.taken_at,
            r.camera,
            r.content_hash,
            keyword_score=keyword_scores.get(r.id),
        )
        for image_id in order
        if (r := rows.get(image_id)) is not None
    ]


def _collapse(service, hits: list[ImageHit], threshold: float) -> list[ImageHit]:
    ids, vectors = _stored_vectors(service, [h.image_id for h in hits])
    by_id = dict(zip(ids, vectors, strict=True))
    present = [h for h in hits if h.image_id in by_id]
    owners = group_near_duplicates(np.stack([by_id[h.image_id] for h in present]), threshold) if present else []
    counts: dict[int, int] = {}
    for i, owner in enumerate(owners):
        if owner != i:
            counts[owner] = counts.get(owner, 0) + 1
    return [dataclasses.replace(h, duplicates=counts.get(i, 0)) for i, h in enumerate(present) if owners[i] == i]
