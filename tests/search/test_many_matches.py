"""Words found in more photos than the keyword ranking reads: a -word still excludes every photo it
matches, and a quoted phrase still finds every photo that has it. The exclusion list used to be a
ranked keyword search cut at 50 x the candidate pool (10,000 photos for a page of 10), and a phrase
was looked for only among the best-ranked 4 x pool keyword matches."""

from __future__ import annotations

import numpy as np
import pytest

from pixsearch.indexer import writer
from pixsearch.indexer.decode import Prepared
from pixsearch.models import create
from pixsearch.search import SearchService
from pixsearch.search.engine import SearchOptions, hybrid_search
from pixsearch.storage import IMAGES, Library

COUNT = 10_500
EVERYTHING = SearchOptions(cutoff_z=None, duplicate_threshold=None)


def _path(i: int) -> str:
    """210 photos in "forest", 210 in "trip/beach" (longer paths: ranked below the rest for "beach"),
    the other 10,080 in "beach"."""
    return {0: f"/photos/forest/{i}.jpg", 1: f"/photos/trip/beach/{i}.jpg"}.get(i % 50, f"/photos/beach/{i}.jpg")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, clip_spec: str) -> SearchService:
    encoder = create(clip_spec)
    vectors = np.random.default_rng(0).standard_normal((COUNT, encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    library = Library.open(tmp_path_factory.mktemp("many") / "library")
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
    return SearchService(library, encoder=encoder)


def test_an_excluded_word_keeps_out_every_photo_it_matches(service: SearchService) -> None:
    first_page = hybrid_search(service, "a photo -beach", k=10, options=EVERYTHING)
    assert len(first_page.hits) == 10 and all("/forest/" in hit.path for hit in first_page.hits)
    every_result = hybrid_search(service, "a photo -beach", k=1000, options=EVERYTHING)
    assert every_result.total == COUNT // 50  # the forest photos, every one of them found by the vectors
    assert all("/forest/" in hit.path for hit in every_result.hits)


def test_a_phrase_finds_every_photo_that_has_it(service: SearchService) -> None:
    first_page = hybrid_search(service, '"beach" folder:trip', k=10, options=EVERYTHING)
    assert first_page.empty is None and len(first_page.hits) == 10
    assert all("/trip/beach/" in hit.path for hit in first_page.hits)
    every_result = hybrid_search(service, '"beach" folder:trip', k=1000, options=EVERYTHING)
    assert every_result.total == COUNT // 50 and all("/trip/beach/" in hit.path for hit in every_result.hits)
