"""What a search returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ImageHit:
    image_id: int
    path: str
    score: float
    width: int
    height: int
    taken_at: datetime | None = None
    camera: str | None = None
    content_hash: str = ""
    first_stage_score: float | None = None  # set when reranked: `score` is then the fused score
    rerank_score: float | None = None
    keyword_score: float | None = None  # relevance in the keyword index, when it matched there
    duplicates: int = 0  # near-identical results collapsed into this one

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.image_id,
            "path": self.path,
            "score": round(self.score, 6),
            "first_stage_score": _round(self.first_stage_score),
            "rerank_score": _round(self.rerank_score),
            "keyword_score": _round(self.keyword_score),
            "duplicates": self.duplicates,
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
