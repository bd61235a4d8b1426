"""The IVF-PQ index built with a CUDA device (faiss-gpu): cells trained and bulk additions assigned
there, then searched, changed, saved and read back. Skipped without a GPU build of FAISS and a device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clustered import clustered, image_queries, text_queries

from pixsearch.storage.ann import Gpu, IndexChoice
from pixsearch.storage.vector_index import VectorIndex

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(Gpu.find() is None, reason="needs faiss-gpu and a CUDA device"),
]


def test_ivfpq_on_the_gpu_matches_exact_search(tmp_path: Path) -> None:
    data = clustered(50_000, 512, seed=6)
    ids = np.arange(1, len(data.vectors) + 1)
    index = VectorIndex(512)
    index.add(ids, data.vectors, ids)
    queries = text_queries(data, 50)
    _, truth = index.search(queries, 10)
    index.fit(IndexChoice.parse("ivfpq"))
    assert index.on_gpu
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), truth.tolist(), strict=True)])
    assert recall >= 0.95
    fresh = image_queries(data, 10, seed=7)
    index.add(np.arange(10**6, 10**6 + 10), fresh, np.arange(10))  # the GPU copy follows the change
    assert index.search(fresh, 1)[1][:, 0].tolist() == list(range(10**6, 10**6 + 10))
    index.save(tmp_path / "images-gpu.faiss")
    loaded = VectorIndex.load(tmp_path / "images-gpu.faiss")
    assert np.array_equal(loaded.search(queries, 10)[1], index.search(queries, 10)[1]) and loaded.on_gpu
