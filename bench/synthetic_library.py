"""A library of many photos for the scale benchmarks, written straight into SQLite in bulk.

Indexing a million real photos takes hours; the search path only needs the rows a real index run
leaves: images, their vectors (here clustered unit vectors, see tests/clustered.py), keyword
documents and the model row. They are inserted with executemany in large transactions (a million
rows with 2 KB vectors is ~2.5 GB and a couple of minutes). Photo files do not exist.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pixsearch.storage import IMAGES, Library
from pixsearch.storage.ann import IndexChoice
from pixsearch.storage.library import model_key

_CHUNK = 50_000
# folder words: a word query matches ~1/40 of the library by keywords (a real library's folders are as varied)
_PLACES = (
    "beach", "city", "forest", "kitchen", "mountain", "garden", "street", "party", "snow", "museum", "lake", "river",
    "harbour", "market", "station", "bridge", "castle", "church", "desert", "island", "village", "farm", "zoo",
    "stadium", "concert", "wedding", "birthday", "school", "office", "airport", "camping", "skiing", "sailing",
    "hiking", "picnic", "festival", "carnival", "holiday", "christmas", "easter",
)  # fmt: skip


def build_library(
    root: Path,
    vectors: np.ndarray,
    spec: str,
    preprocess_id: str,
    progress: Callable[[int, int], None] | None = None,
) -> Library:
    """A library at `root` whose image i (id i + 1) has vector `vectors[i]`; no index file yet."""
    library = Library.open(root)
    count, dim = vectors.shape
    key = model_key(spec, preprocess_id)
    with library.session() as session:
        library.use_model(session, spec, preprocess_id, dim)
        library.bump_generation(session, IMAGES, key)
    connection = sqlite3.connect(root / "pixsearch.db")
    connection.execute("PRAGMA synchronous=OFF")
    try:
        for start in range(0, count, _CHUNK):
            stop = min(start + _CHUNK, count)
            ids = range(start + 1, stop + 1)
            paths = [f"/photos/{2000 + i % 25}/{_PLACES[(i // 100) % len(_PLACES)]}/img_{i:07d}.jpg" for i in ids]
            with connection:
                connection.executemany(
                    "INSERT INTO images (id, path, content_hash, size, mtime, width, height, taken_at, camera, "
                    "indexed_at) VALUES (?, ?, ?, 1000, 0.0, 640, 480, NULL, NULL, '2024-01-01 00:00:00')",
                    [(i, path, f"{i:064x}") for i, path in zip(ids, paths, strict=True)],
                )
                connection.executemany(
                    "INSERT INTO embeddings (id, image_id, model_key, vector) VALUES (?, ?, ?, ?)",
                    [(i, i, key, vectors[i - 1].tobytes()) for i in ids],
                )
                connection.executemany(
                    "INSERT INTO keywords (rowid, path, caption, tags, ocr, exif) VALUES (?, ?, '', '', '', '')",
                    zip(ids, paths, strict=True),
                )
            if progress:
                progress(stop, count)
    finally:
        connection.close()
    return library


def build_index(library: Library, choice: str) -> None:
    """Build and save the image index of the library's model as `choice` (e.g. flat, ivfpq)."""
    with library.session() as session:
        library.set_index_choice(session, IndexChoice.parse(choice))
        model = library.active_model(session)
    with library.writing("bench"):
        library.rebuild_index(IMAGES, model)
