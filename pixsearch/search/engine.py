"""Hybrid search: the query language, filters, keyword and vector rankings fused by reciprocal
rank fusion, a relevance cut-off judged per photo (`pixsearch.search.relevance`), and near-duplicate
grouping. Reads only."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from sqlalchemy import select

from pixsearch.errors import ConfigError
from pixsearch.search import filters as sql_filters
from pixsearch.search.fusion import fused_scores, group_near_duplicates
from pixsearch.search.query import ParsedQuery, parse_query
from pixsearch.search.relevance import DEFAULT_PROMPTS, DEFAULT_Z_MIN, Background, z_scores
from pixsearch.search.results import FILTER, SIMILARITY, ImageHit
from pixsearch.search.service import SearchService, check_k
from pixsearch.storage import keywords
from pixsearch.storage.library import IMAGES
from pixsearch.storage.schema import ImageRow

STOPWORDS = frozenset("a an and are as at be by for from in is it of on or the to with".split())


@dataclass(frozen=True)
class SearchOptions:
    keyword_weight: float = 1.0  # RRF weight of the keyword ranking; the vector ranking weighs 1
    rrf_k: int = 60
    cutoff_z: float | None = DEFAULT_Z_MIN  # keep photos the query fits this many spreads above the background
    min_score: float | None = None  # and/or above this absolute similarity
    background: tuple[str, ...] = DEFAULT_PROMPTS  # the prompts a photo is judged against (see relevance)
    model_calibration: bool = True  # a model that ships its relevance.json: its background and z_min instead
    duplicate_threshold: float | None = 0.95  # group results this similar to a better one; None: never
    pool: int = 200  # candidates taken from each ranking before fusion
    # words found in more photos than this are ranked among the most recently indexed this many
    # (ranking reads every match it ranks: this bounds a query's keyword work at any library size)
    keyword_window: int = 4096

    def __post_init__(self) -> None:
        if self.keyword_weight < 0:
            raise ConfigError(f"keyword weight must be 0 or more, got {self.keyword_weight}")
        if self.duplicate_threshold is not None and not 0 < self.duplicate_threshold <= 1:
            raise ConfigError(f"duplicate threshold must be in (0, 1], got {self.duplicate_threshold}")
        Background(self.background)  # checks the prompts


class Empty(StrEnum):
    """Why a search found nothing at all."""

    NO_GOOD_MATCH = "no good match"  # candidates there were, none passed the relevance cut-off
    NO_FILTER_MATCH = "no filter match"  # no photo passes the filters
    NO_PHRASE_MATCH = "no phrase match"  # no photo contains the quoted phrase
    EXCLUDED = "excluded"  # every match was excluded by a -word
    NOTHING = "nothing"


@dataclass
class SearchResult:
    hits: list[ImageHit]  # the page asked for (offset, k)
    query: ParsedQuery
    total: int = 0  # results before paging
    empty: Empty | None = None  # why there are no results at all
    cutoff: float | None = None  # the z_min photos were held to, when the query had words to judge by
    min_score: float | None = None  # and the least similarity
    best_score: float | None = None  # the best vector similarity, before the cut-off
    notes: list[str] = field(default_factory=list)

    @property
    def no_good_match(self) -> bool:
        return self.empty is Empty.NO_GOOD_MATCH

    def explain(self) -> str | None:
        """Why there are no results, in a sentence; None when there are some."""
        if self.empty is None:
            return None
        if self.empty is Empty.NO_FILTER_MATCH:
            return f"no photo matches the filters {self.query.filters.describe()}"
        if self.empty is Empty.NO_PHRASE_MATCH:
            phrases = " and ".join(f'"{p}"' for p in self.query.phrases)
            where = " matching the filters" if self.query.filters else ""
            return f"no photo{where} contains the phrase {phrases} (in names, tags, text, EXIF or a person's caption)"
        if self.empty is Empty.NO_GOOD_MATCH:
            held = (
                [f"the words fit {self.cutoff:g} spreads above the background prompts"]
                if self.cutoff is not None
                else []
            )
            held += [f"similarity at least {self.min_score:g}"] if self.min_score is not None else []
            best = f"; the best similarity was {self.best_score:.3f}" if self.best_score is not None else ""
            return f"no good match: no photo passed the relevance cut-off ({'; '.join(held)}){best}"
        if self.empty is Empty.EXCLUDED:
            return f"every match contains an excluded word ({', '.join('-' + w for w in self.query.exclude)})"
        return "no results"


def hybrid_search(
    service: SearchService, text: str, k: int = 10, offset: int = 0, options: SearchOptions | None = None
) -> SearchResult:
    """Run a query written in the query language (see `pixsearch.search.query`)."""
    check_k(k, offset)
    with service.pinned():  # one state of the library for the whole query
        return _hybrid_search(service, text, k, offset, options or SearchOptions())


def _hybrid_search(service: SearchService, text: str, k: int, offset: int, options: SearchOptions) -> SearchResult:
    parsed = parse_query(text)
    if not (parsed.has_vector or parsed.phrases or parsed.filters):
        raise ConfigError("empty query: give some words, a phrase or a filter")
    pool = max(options.pool, 3 * (k + offset))
    with service.library.session() as session:
        allowed = sql_filters.matching_ids(session, parsed.filters)
        excluded = _excluded(session, parsed)
    result = SearchResult([], parsed)
    background = _background(service, options) if parsed.has_vector else None
    if background is not None:
        result.cutoff = None if options.cutoff_z is None else background.z_min
        result.min_score = options.min_score
    if allowed is not None and not allowed:
        result.empty = Empty.NO_FILTER_MATCH
        return result
    index = service.index(IMAGES)  # one index for the whole query: every vector read below comes from it
    vector, candidates, relevant = None, [], []
    if parsed.has_vector:
        vector = _query_vector(service, parsed)
        candidates = _vector_candidates(service, index, vector, allowed, excluded, pool)
        result.best_score = candidates[0][1] if candidates else None
        relevant = _relevant(service, index, parsed, vector, candidates, options, background)
    keyword_ranking, keyword_scores = _keyword_ranking(service, parsed, allowed, excluded, pool, options.keyword_window)
    if parsed.phrases:  # a quoted phrase must appear: in any photo that has it, not only the best keyword-ranked
        containing = _containing(service, parsed, allowed, excluded)
        if not containing:
            result.empty = Empty.NO_PHRASE_MATCH
            return result
        relevant = [c for c in relevant if c[0] in containing]
    order, fused = _order(service, parsed, relevant, keyword_ranking, allowed, excluded, pool, options)
    groups, similarity = _groups(service, index, order, vector, options.duplicate_threshold)
    match = SIMILARITY if vector is not None else FILTER
    scores = _Scores(similarity, keyword_scores, fused, {i: z for i, _, z in relevant}, match)
    result.hits, result.total = _page(service, groups, offset, k, scores)
    if not result.total:
        result.empty = _why_empty(parsed, candidates, relevant, excluded)
    return result


def _order(service, parsed, relevant, keyword_ranking, allowed, excluded, pool, options):
    """Ids in result order, and their fused scores when a keyword ranking took part (else None: the
    similarity alone decides, and is what is shown)."""
    vector_ranking = [i for i, _, _ in relevant]
    if keyword_ranking and options.keyword_weight > 0:
        fused = fused_scores([vector_ranking, keyword_ranking], [1.0, options.keyword_weight], options.rrf_k)
        return list(fused), fused
    if vector_ranking or parsed.has_vector or parsed.phrases or allowed is None:
        return vector_ranking, None
    with service.library.session() as session:  # filters alone: the newest first
        return sql_filters.newest_first(session, allowed - excluded, pool), None


def _why_empty(parsed: ParsedQuery, candidates, relevant, excluded: set[int]) -> Empty:
    if parsed.has_vector and candidates and not relevant:
        return Empty.NO_GOOD_MATCH
    return Empty.EXCLUDED if excluded else Empty.NOTHING


def _excluded(session, parsed: ParsedQuery) -> set[int]:
    if not parsed.exclude:
        return set()
    return keywords.matching_ids(session, keywords.KeywordQuery(any_of=parsed.exclude))


def _query_vector(service: SearchService, parsed: ParsedQuery) -> np.ndarray:
    weights = np.asarray([w for w, _ in parsed.terms], dtype=np.float32)
    vectors = service.encode_text([t for _, t in parsed.terms])
    combined = (weights[:, None] * vectors).sum(axis=0)
    norm = float(np.linalg.norm(combined))
    if norm < 1e-6:
        raise ConfigError("the query's terms cancel out: nothing is left to search for")
    return combined / norm


def _vector_candidates(service, index, vector, allowed, excluded, pool) -> list[tuple[int, float]]:
    """(image id, similarity) of the `pool` nearest photos that pass the filters, best first."""
    total = len(index)
    if allowed is not None and len(allowed) <= max(20 * pool, total // 20):
        return _exact(service, index, vector, allowed - excluded)[:pool]  # selective filter: score just those
    fetch = pool * 2
    while True:  # over-fetch until enough pass the filters, or the index is exhausted
        scores, ids = index.search(vector[None, :].astype(np.float32), min(fetch, total))
        pairs = [(int(e), float(s)) for e, s in zip(ids[0], scores[0], strict=True) if e >= 0]
        image_of = service.image_ids_of([e for e, _ in pairs], index)
        ranked = [
            (image_of[e], s)
            for e, s in pairs
            if e in image_of and image_of[e] not in excluded and (allowed is None or image_of[e] in allowed)
        ]
        if len(ranked) >= pool or fetch >= total:
            return ranked[:pool]
        fetch *= 4


def _background(service: SearchService, options: SearchOptions) -> Background:
    """What photos are judged against: the model's own calibration when it ships one, else the options'."""
    calibrated = service.relevance_calibration() if options.model_calibration else None
    return calibrated or Background(options.background, options.cutoff_z if options.cutoff_z is not None else 0.0)


def _relevant(service, index, parsed, vector, candidates, options, background) -> list[tuple[int, float, float | None]]:
    """The candidates that pass the relevance cut-off: (image id, similarity, z), best first."""
    if not candidates or (options.cutoff_z is None and options.min_score is None):
        return [(i, s, None) for i, s in candidates]
    unrelated = background.unrelated_to(" ".join(t for _, t in parsed.terms))
    if unrelated.sum() < 3:  # the query names nearly every prompt: judge it against them all
        unrelated[:] = True
    prompts = service.text_vectors(background.prompts)[unrelated]
    ids, vectors = service.vectors_of([i for i, _ in candidates], index)
    z_of = dict(zip(ids, z_scores(vector.astype(np.float32), vectors, prompts).tolist(), strict=True))
    return [
        (i, s, z_of[i])
        for i, s in candidates
        if i in z_of
        and (options.cutoff_z is None or z_of[i] >= background.z_min)
        and (options.min_score is None or s >= options.min_score)
    ]


def _exact(service, index, vector, ids) -> list[tuple[int, float]]:
    image_ids, vectors = service.vectors_of(sorted(ids), index)
    scores = vectors @ vector
    return [(image_ids[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")]


def _containing(service, parsed: ParsedQuery, allowed, excluded) -> set[int]:
    """Every photo that has all the query's quoted phrases and passes its filters."""
    with service.library.session() as session:
        found = keywords.matching_ids(session, keywords.KeywordQuery(include=parsed.phrases)) - excluded
    return found if allowed is None else found & allowed


def _keyword_ranking(service, parsed: ParsedQuery, allowed, excluded, pool, window):
    words = tuple(w for w in parsed.words if w not in STOPWORDS)
    query = keywords.KeywordQuery(include=parsed.phrases, any_of=() if parsed.phrases else words)
    window = max(window, pool * 4)
    # filtered below: then take the whole window, lest matches the filters drop crowd out the rest
    limit = window if allowed is not None or excluded else pool * 4
    with service.library.session() as session:
        found = keywords.search(session, query, limit, window=window)
    found = [(i, s) for i, s in found if i not in excluded and (allowed is None or i in allowed)][:pool]
    return [i for i, _ in found], dict(found)


def _groups(service, index, order, vector, threshold) -> tuple[list[tuple[int, list[int]]], dict[int, float]]:
    """The results in order as (photo, its near-identical members) and each one's similarity to the
    query vector. Photos within `threshold` of a better one join its group (see
    `group_near_duplicates`); with grouping on, photos without a stored vector are left out."""
    if not order:
        return [], {}
    if vector is None and threshold is None:
        return [(i, []) for i in order], {}
    ids, vectors = service.vectors_of(order, index)
    similarity = dict(zip(ids, (vectors @ vector).tolist(), strict=True)) if vector is not None else {}
    if threshold is None:
        return [(i, []) for i in order], similarity
    owners = group_near_duplicates(vectors, threshold) if ids else []
    members: dict[int, list[int]] = {}
    for i, owner in enumerate(owners):
        if owner != i:
            members.setdefault(owner, []).append(ids[i])
    return [(ids[i], members.get(i, [])) for i, owner in enumerate(owners) if owner == i], similarity


@dataclass(frozen=True)
class _Scores:
    """What a hit shows beside its database row."""

    similarity: dict[int, float]
    keyword: dict[int, float]
    fused: dict[int, float] | None
    relevance: dict[int, float | None]
    match: str


def _page(service, groups, offset: int, k: int, scores: _Scores) -> tuple[list[ImageHit], int]:
    """The hits of the page asked for, and how many results there are (a group counts once).
    Database rows are read for the page's photos and their members only, not for every result.
    `score` is always the cosine similarity to the query vector (keyword matches included), so it
    means the same with or without keywords and feeds reranking fusion; `fused_score` is what
    ordered them when keywords took part. Without a query vector (filters alone) a hit is a filter
    match, with no score."""

    def hit(r: ImageRow) -> ImageHit:
        return ImageHit(
            r.id,
            r.path,
            scores.similarity.get(r.id, 0.0),
            r.width,
            r.height,
            r.taken_at,
            r.camera,
            r.content_hash,
            keyword_score=scores.keyword.get(r.id),
            fused_score=None if scores.fused is None else scores.fused[r.id],
            relevance=scores.relevance.get(r.id),
            match=scores.match,
        )

    total, page, at = len(groups), [], offset
    while len(page) < k and at < len(groups):  # a row is missing only for a photo deleted since the index was read
        chunk = groups[at : at + k - len(page)]
        at += len(chunk)
        wanted = [i for leader, members in chunk for i in (leader, *members)]
        with service.library.session() as session:
            rows = {r.id: r for r in session.execute(select(ImageRow).where(ImageRow.id.in_(wanted))).scalars()}
        for leader, members in chunk:
            if leader not in rows:
                total -= 1
                continue
            near = tuple(hit(rows[m]) for m in members if m in rows)
            page.append(dataclasses.replace(hit(rows[leader]), near_identical=near) if near else hit(rows[leader]))
    return page, total
