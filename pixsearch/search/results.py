"""What a search returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

SIMILARITY = "similarity"  # ranked by the query vector (and keywords)
FILTER = "filter"  # a filter-only query: matched its filters, no relevance to score


@dataclass(frozen=True)
class ImageHit:
    image_id: int
    path: str
    score: float  # cosine similarity to the query vector (the fused score when reranked); 0 for a filter match
    width: int
    height: int
    taken_at: datetime | None = None
    camera: str | None = None
    content_hash: str = ""
    first_stage_score: float | None = None  # set when reranked: `score` is then the fused score
    rerank_score: float | None = None
    keyword_score: float | None = None  # relevance in the keyword index, when it matched there
    near_identical: tuple[ImageHit, ...] = ()  # results grouped under this one (each within the threshold of it)
    fused_score: float | None = (
        None  # hybrid search: the rank fusion score that ordered the results (1 = first everywhere)
    )
    relevance: float | None = None  # hybrid search: the photo's z against the background prompts
    match: str = SIMILARITY

    @property
    def duplicates(self) -> int:
        """How many near-identical results are grouped under this one."""
        return len(self.near_identical)

    @property
    def ranking_score(self) -> float | None:
        """The number that put this hit where it is: the reranked score, else the fused score of a
        hybrid search, else the similarity; None for a filter match (it has no score)."""
        if self.rerank_score is not None:
            return self.score
        if self.fused_score is not None:
            return self.fused_score
        return None if self.match == FILTER else self.score

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.image_id,
            "path": self.path,
            "score": None if self.match == FILTER else round(self.score, 6),
            "match": self.match,
            "fused_score": _round(self.fused_score),
            "relevance": _round(self.relevance),
            "first_stage_score": _round(self.first_stage_score),
            "rerank_score": _round(self.rerank_score),
            "keyword_score": _round(self.keyword_score),
            "duplicates": self.duplicates,
            "duplicate_ids": [hit.image_id for hit in self.near_identical],
            "width": self.width,
            "height": self.height,
            "taken_at": self.taken_at.isoformat() if self.taken_at else None,
            "camera": self.camera,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass(frozen=True)
class TextHit:
    text_id: int
    text: str
    collection: str
    score: float
    first_stage_score: float | None = None
    rerank_score: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.text_id,
            "text": self.text,
            "collection": self.collection,
            "score": round(self.score, 6),
            "first_stage_score": _round(self.first_stage_score),
            "rerank_score": _round(self.rerank_score),
        }
