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
from pixsearch.storage.ann import FLAT
from pixsearch.storage.library import IMAGES
from pixsearch.storage.schema import ImageRow
from pixsearch.storage.vector_index import VectorIndex

_MAX_NEIGHBOURS = 64


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


def _neighbours(index: VectorIndex, ids: npt.NDArray[np.int64], threshold: float, batch: int) -> list[np.ndarray]:
    """For each vector (by its position in `ids`), the positions of the others within `threshold`.

    A flat index is searched exactly by range; an approximate one gives each vector's nearest
    `_MAX_NEIGHBOURS` (re-scored exactly), so a group in a large library holds at most that many.
    """
    found: list[np.ndarray] = []
    if index.kind == FLAT:
        flat = faiss.IndexFlatIP(index.dim)
        for _, _, vectors in index.chunks(batch):
            flat.add(vectors)
    start = 0
    for _, _, vectors in index.chunks(batch):
        if index.kind == FLAT:
            limits, _, near = flat.range_search(vectors, threshold)
            rows = [near[limits[r] : limits[r + 1]].astype(np.int64) for r in range(len(limits) - 1)]
        else:
            scores, near_ids = index.search(vectors, min(_MAX_NEIGHBOURS, len(ids)))
            rows = [np.searchsorted(ids, i[(s >= threshold) & (i >= 0)]) for s, i in zip(scores, near_ids, strict=True)]
        found.extend(near[near != start + r] for r, near in enumerate(rows))
        start += len(vectors)
    return found


def find_duplicates(service: SearchService, threshold: float = 0.95, batch: int = 4096) -> list[list[ImageHit]]:
    """Every group of two or more near-identical photos, largest first. A group starts with its
    representative; each hit's score is its similarity to the representative (so never below `threshold`).
    The vectors are read from the index (its memory-mapped vector file), not the database.

    Raises:
        ConfigError: a threshold outside (0, 1].
    """
    if not 0 < threshold <= 1:
        raise ConfigError(f"duplicate threshold must be in (0, 1], got {threshold}")
    index = service.index(IMAGES)
    ids = index.ids()
    if len(ids) < 2:
        return []
    owner = leaders(_neighbours(index, ids, threshold, batch))
    groups: dict[int, list[int]] = {}
    for i, representative in enumerate(owner.tolist()):
        groups.setdefault(representative, []).append(i)
    groups = {r: members for r, members in groups.items() if len(members) > 1}
    image_of = dict(zip(ids.tolist(), index.owners_of(ids).tolist(), strict=True))
    rows = _rows(service, [image_of[int(ids[i])] for members in groups.values() for i in members])
    result = []
    for representative, members in groups.items():
        _, vectors = index.vectors_of(ids[members])
        _, (lead,) = index.vectors_of(ids[[representative]])
        ranked = sorted(
            zip(members, (vectors @ lead).tolist(), strict=True), key=lambda m: (m[0] != representative, -m[1])
        )
        hits = [_hit(row, score) for i, score in ranked if (row := rows.get(image_of[int(ids[i])])) is not None]
        if len(hits) > 1:
            result.append(hits)
    return sorted(result, key=lambda g: (-len(g), g[0].image_id))


def _rows(service: SearchService, image_ids: list[int], chunk: int = 10_000) -> dict[int, ImageRow]:
    rows: dict[int, ImageRow] = {}
    with service.library.session() as session:
        for start in range(0, len(image_ids), chunk):
            query = select(ImageRow).where(ImageRow.id.in_(image_ids[start : start + chunk]))
            rows.update((row.id, row) for row in session.execute(query).scalars())
    return rows


def _hit(row: ImageRow, score: float) -> ImageHit:
    return ImageHit(row.id, row.path, score, row.width, row.height, row.taken_at, row.camera, row.content_hash)
