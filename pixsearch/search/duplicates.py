"""Groups of near-identical photos in a library (cosine of their vectors above a threshold)."""

from __future__ import annotations

import faiss
import numpy as np
from sqlalchemy import select

from pixsearch.errors import ConfigError
from pixsearch.search.results import ImageHit
from pixsearch.search.service import SearchService
from pixsearch.storage.schema import Embedding, ImageRow


def _union_find(n: int, pairs: list[tuple[int, int]]) -> list[int]:
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [root(i) for i in range(n)]


def find_duplicates(service: SearchService, threshold: float = 0.95, batch: int = 4096) -> list[list[ImageHit]]:
    """Every group of two or more photos whose vectors are at least `threshold` similar to another
    member (connected components, as clip-retrieval deduplicates). Largest groups first.

    Each hit's score is its similarity to the group's first member.
    """
    if not 0 < threshold <= 1:
        raise ConfigError(f"duplicate threshold must be in (0, 1], got {threshold}")
    with service.library.session() as session:
        rows = session.execute(
            select(ImageRow, Embedding.vector)
            .join(Embedding, Embedding.image_id == ImageRow.id)
            .where(Embedding.model_key == service.model.key)
            .order_by(ImageRow.id)
        ).all()
    if len(rows) < 2:
        return []
    vectors = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(len(rows), -1).copy()
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(vectors), batch):
        limits, _, found = index.range_search(vectors[start : start + batch], threshold)
        for row in range(len(limits) - 1):
            pairs.extend((start + row, int(j)) for j in found[limits[row] : limits[row + 1]] if j != start + row)
    roots = _union_find(len(rows), pairs)
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(roots):
        groups.setdefault(r, []).append(i)
    result = []
    for members in groups.values():
        if len(members) < 2:
            continue
        first = vectors[members[0]]
        result.append(
            [
                ImageHit(
                    r.id, r.path, float(vectors[i] @ first), r.width, r.height, r.taken_at, r.camera, r.content_hash
                )
                for i in members
                for r in [rows[i][0]]
            ]
        )
    return sorted(result, key=lambda g: (-len(g), g[0].image_id))
