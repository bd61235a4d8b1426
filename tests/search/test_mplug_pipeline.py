"""The mPLUG founders' pipeline through the product: index with mPLUG's contrastive towers (FAISS),
rerank the top k with its ITM head, both from one retrieval checkpoint."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import Role, create
from pixsearch.rerank import Fusion, RerankOptions, RerankService
from pixsearch.search import SearchService
from pixsearch.storage import Library

FIXTURES = Path(
    os.environ.get("PIXSEARCH_FIXTURES", Path(__file__).resolve().parents[2].parent / "shared" / "fixtures")
)
RETRIEVAL = FIXTURES / "mplug" / "image-text-retrieval"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    if not RETRIEVAL.is_dir():
        pytest.skip(f"conformance fixtures folder absent: {RETRIEVAL}")
    return dict(np.load(FIXTURES / "mplug" / "image-text-retrieval.npz"))


def test_index_search_and_rerank_with_mplug(reference, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(FIXTURES / "images", photos)
    spec = f"mplug:{RETRIEVAL}"
    library = Library.open(tmp_path / "library")
    report = Indexer(library, create(spec, Role.DUAL_ENCODER), IndexOptions(workers=0)).run([photos])
    assert report.embedded == 3

    service = SearchService(library)
    names = ["red_circle.png", "blue_square.png", "green_triangle.png"]  # the fixture's image order
    texts = ["a red circle on a white background", "a blue square"]
    for j, text in enumerate(texts):
        hits = service.text_to_image(text, k=3)
        by_name = {Path(h.path).name: h.score for h in hits}
        # the FAISS scores are the ITC cosines the original code computed
        np.testing.assert_allclose([by_name[n] for n in names], reference["itc_cosine"][:, j], atol=1e-4)

    rerank_spec = f"mplug-itm:{RETRIEVAL}"
    reranker = RerankService(
        create(rerank_spec, Role.RERANKER), rerank_spec, library.root, RerankOptions(k=3, fusion=Fusion.ITM)
    )
    reranked = reranker.rerank_images(texts[1], service.text_to_image(texts[1], k=3))
    itm = reference["itm_logits"].reshape(3, 4, 2)[:, 1, 1]  # rows are image-major: image i x text j
    by_name = {Path(h.path).name: h.rerank_score for h in reranked}
    np.testing.assert_allclose([by_name[n] for n in names], itm, atol=1e-4)
    assert [Path(h.path).name for h in reranked] == [names[i] for i in np.argsort(-itm, kind="stable")]
