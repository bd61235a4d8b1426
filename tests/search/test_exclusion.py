"""A -word excludes every photo it matches, however many: the exclusion list used to be a ranked
keyword search cut at 50 x the candidate pool (10,000 photos for a page of 10), so in a large
library the rest of them came back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pixsearch.indexer import writer
from pixsearch.indexer.decode import Prepared
from pixsearch.models import create
from pixsearch.search import SearchService
from pixsearch.search.engine import SearchOptions, hybrid_search
from pixsearch.storage import IMAGES, Library

COUNT = 10_500  # every 50th photo is in "forest", the other 10,290 in "beach"


def _path(i: int) -> str:
    return f"/photos/{'forest' if i % 50 == 0 else 'beach'}/{i}.jpg"


def test_an_excluded_word_keeps_out_every_photo_it_matches(tmp_path: Path, clip_spec: str) -> None:
    encoder = create(clip_spec)
    vectors = np.random.default_rng(0).standard_normal((COUNT, encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    library = Library.open(tmp_path / "library")
    with library.session() as session:
        model = library.use_model(session, str(encoder.spec), encoder.preprocess_id, encoder.dim)
    with library.writing("test"):
        index = library.load_index(IMAGES, model)
        for start in range(0, COUNT, 2500):
            stop = min(start + 2500, COUNT)
            items = [Prepared(_path(i), f"{i:064x}", 1, 0.0, 64, 48, None, None, None) for i in range(start, stop)]
            with library.session() as session:
                writer.store_embedded(session, items, vectors[start:stop], model.key, index)
                index.generation = library.bump_generation(session, IMAGES, model.key)
        library.save_index(IMAGES, model.key, index)
    everything = SearchOptions(cutoff_z=None, duplicate_threshold=None)
    service = SearchService(library, encoder=encoder)
    first_page = hybrid_search(service, "a photo -beach", k=10, options=everything)
    assert len(first_page.hits) == 10 and all("/forest/" in hit.path for hit in first_page.hits)
    every_result = hybrid_search(service, "a photo -beach", k=1000, options=everything)
    assert every_result.total == COUNT // 50  # the forest photos, every one of them found by the vectors
    assert all("/forest/" in hit.path for hit in every_result.hits)
