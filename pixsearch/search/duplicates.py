"""Groups of near-identical photos in a library (cosine of their vectors at or above a threshold).

Groups are made by leader clustering, so each is tight: every member is within the threshold of
the group's representative. (Connected components of the "alike" pairs chain instead: in a burst
that drifts, or with a weak model, A ~ B ~ C ~ ... joins photos that are nothing alike, and one
library put 1,960 of its 2,000 photos in one group, a member at similarity -0.13 to the first.)
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
import numpy.typing as npt
from sqlalchemy import select

from pixsearch.errors import ConfigError
from pixsearch.search.results import ImageHit
from pixsearch.search.service import SearchService
from pixsearch.storage.schema import Embedding, ImageRow


def leaders(neighbours: Sequence[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64]:
    """The representative of each photo, given each photo's neighbours (the others within the threshold).

    Photos with the most neighbours lead first: a photo not yet in a group starts one, and its
    neighbours not yet in a group join it. So a member is always a neighbour of its representative.
    A photo alone is its own representative.
    """
    count = len(neighbours)
    owner = np.full(count, -1, dtype=np.int64)
    order = sorted(range(count), key=lambda i: (-len(neighbours[i]), i))
    for i in order:
        if owner[i] >= 0:
            continue
        owner[i] = i
        free = neighbours[i][owner[neighbours[i]] < 0]
        owner[free] = i
    return owner


def _neighbours(vectors: npt.NDArray[np.float32], threshold: float, batch: int) -> list[npt.NDArray[np.int64]]:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    found: list[npt.NDArray[np.int64]] = []
    for start in range(0, len(vectors), batch):
        limits, _, ids = index.range_search(vectors[start : start + batch], threshold)
        for row in range(len(limits) - 1):
            near = ids[limits[row] : limits[row + 1]].astype(np.int64)
            found.append(near[near != start + row])
    return found


def find_duplicates(service: SearchService, threshold: float = 0.95, batch: int = 4096) -> list[list[ImageHit]]:
    """Every group of two or more near-identical photos, largest first. A group starts with its
    representative; each hit's score is its similarity to the representative (so never below `threshold`).

    Raises:
        ConfigError: a threshold outside (0, 1].
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
    owner = leaders(_neighbours(vectors, threshold, batch))
    groups: dict[int, list[int]] = {}
    for i, representative in enumerate(owner.tolist()):
        groups.setdefault(representative, []).append(i)
    result = []
    for representative, members in groups.items():
        if len(members) < 2:
            continue
        similarity = vectors[members] @ vectors[representative]
        ranked = sorted(zip(members, similarity.tolist(), strict=True), key=lambda m: (m[0] != representative, -m[1]))
        result.append([_hit(rows[i][0], score) for i, score in ranked])
    return sorted(result, key=lambda g: (-len(g), g[0].image_id))


def _hit(row: ImageRow, score: float) -> ImageHit:
    return ImageHit(row.id, row.path, score, row.width, row.height, row.taken_at, row.camera, row.content_hash)
