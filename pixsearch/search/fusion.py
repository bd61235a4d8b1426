"""Combining rankings: reciprocal rank fusion, and collapsing near-duplicates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], weights: Sequence[float], k: int = 60) -> list[int]:
    """Ids ordered by sum(weight / (k + rank)) over the rankings (rank from 1), ties by first appearance."""
    return list(fused_scores(rankings, weights, k))


def fused_scores(rankings: Sequence[Sequence[int]], weights: Sequence[float], k: int = 60) -> dict[int, float]:
    """{id: fused score}, best first (ties by first appearance): sum(weight / (k + rank)) over the
    rankings, scaled so that an id first in every ranking that has any ids scores 1."""
    if len(rankings) != len(weights):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    order = {item: i for i, item in enumerate(dict.fromkeys(i for ranking in rankings for i in ranking))}
    top = sum(weight for ranking, weight in zip(rankings, weights, strict=True) if ranking) / (k + 1)
    scale = 1.0 / top if top > 0 else 0.0
    return {item: scores[item] * scale for item in sorted(scores, key=lambda item: (-scores[item], order[item]))}


def group_near_duplicates(vectors: npt.NDArray[np.float32], threshold: float) -> list[int]:
    """For vectors in ranked order, the index of the earlier kept vector each one duplicates
    (cosine >= threshold), or its own index when it is kept."""
    count = len(vectors)
    similarity = vectors @ vectors.T  # a page of results is hundreds of vectors: one product, then a walk
    alike = np.tril(similarity >= threshold, k=-1)  # alike[i, j]: j is earlier than i and within the threshold
    kept = np.zeros(count, dtype=bool)
    owner = list(range(count))
    for i in range(count):
        earlier = np.flatnonzero(alike[i] & kept)
        if len(earlier):
            owner[i] = int(earlier[np.argmax(similarity[i, earlier])])
        else:
            kept[i] = True
    return owner
