"""The index on its own: type choice, IVF-PQ recall against exact search, incremental changes, and the
index + vector file pair on disk (memory-mapped, checked against its header)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clustered import clustered, image_queries, text_queries

from pixsearch.errors import ConfigError, LibraryError
from pixsearch.storage.ann import FLAT, IVFPQ, IndexChoice, default_m, default_nlist
from pixsearch.storage.vector_index import VectorIndex, read_index_record

DIM = 32


@pytest.fixture(scope="module")
def data():
    return clustered(4000, DIM, seed=4)


@pytest.fixture(scope="module")
def ann_index(data) -> VectorIndex:
    """4,000 clustered vectors in an IVF-PQ index (ids 10, 20, ...; owners id + 1)."""
    index = _index(data.vectors, np.arange(1, len(data.vectors) + 1) * 10)
    assert index.fit(IndexChoice.parse("ivfpq")) and index.kind == IVFPQ
    return index


def _index(vectors: np.ndarray, ids: np.ndarray) -> VectorIndex:
    index = VectorIndex(vectors.shape[1], generation=7)
    index.add(ids, vectors, ids + 1)
    return index


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found.tolist(), truth.tolist(), strict=True)])
    )


def test_the_type_follows_the_size_unless_asked_for() -> None:
    auto = IndexChoice()
    assert auto.kind_for(auto.threshold - 1) == FLAT and auto.kind_for(auto.threshold) == IVFPQ
    # back to exact only well below the threshold, so a library at the edge is not rebuilt back and forth
    assert auto.kind_for(auto.threshold - 1, current=IVFPQ) == IVFPQ
    assert auto.kind_for(auto.threshold // 2 - 1, current=IVFPQ) == FLAT
    assert IndexChoice.parse("flat").kind_for(10**9) == FLAT
    assert IndexChoice.parse("ivfpq").kind_for(5000) == IVFPQ
    assert IndexChoice.parse("ivfpq").kind_for(999) == FLAT  # too few vectors to train on
    assert IndexChoice.parse("auto:threshold=5000").kind_for(6000) == IVFPQ
    choice = IndexChoice.parse("IVFPQ:nlist=256, nprobe=24")
    assert (choice.kind, choice.nlist, choice.nprobe, str(choice)) == (IVFPQ, 256, 24, "ivfpq:nlist=256,nprobe=24")
    params = choice.ivfpq_params(1_000_000, 512)
    assert (params.nlist, params.m, params.nbits, params.nprobe) == (256, 256, 4, 24)
    assert (default_nlist(1_000_000), default_nlist(4000), default_m(512), default_m(16)) == (4096, 100, 256, 8)
    assert IndexChoice.parse("ivfpq").ivfpq_params(1_000_000, 512).nprobe == 128  # a 32nd of the cells


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hnsw", "index type must be one of auto, flat, ivfpq, got 'hnsw'"),
        ("ivfpq:nlsit=5", "unknown parameter 'nlsit'"),
        ("ivfpq:nprobe=many", "nprobe must be an integer, got 'many'"),
        ("ivfpq:nprobe=0", "nprobe must be at least 1, got 0"),
    ],
)
def test_a_bad_index_type_is_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        IndexChoice.parse(text)


def test_ivfpq_finds_what_exact_search_finds(data, ann_index: VectorIndex) -> None:
    exact = _index(data.vectors, ann_index.ids())
    for queries in (text_queries(data, 40), image_queries(data, 40)):  # text-like ones sit apart from the photos
        truth_scores, truth = exact.search(queries, 10)
        scores, found = ann_index.search(queries, 10)
        assert _recall(found, truth) >= 0.95
        # scores are exact (re-ranked against the full vectors), not the codes' estimates
        hit = found[:, 0] == truth[:, 0]
        assert np.allclose(scores[hit, 0], truth_scores[hit, 0], atol=1e-5)


def test_ivfpq_adds_and_removes_without_retraining(data, ann_index: VectorIndex) -> None:
    params = ann_index.params
    gone = ann_index.ids()[:500]
    assert ann_index.remove(gone) == 500
    fresh = image_queries(data, 200, seed=9)  # new photos of things the library has
    new_ids = np.arange(10**6, 10**6 + 200)
    ann_index.add(new_ids, fresh, new_ids + 1)
    assert len(ann_index) == 3700 and not ann_index.fit(IndexChoice.parse("ivfpq")) and ann_index.params == params
    _, found = ann_index.search(fresh[:20], 1)
    assert found[:, 0].tolist() == new_ids[:20].tolist()
    _, found = ann_index.search(data.vectors[:50], 5)
    assert not set(found.ravel().tolist()) & set(gone.tolist())
    assert ann_index.owners_of(np.array([new_ids[0], gone[0]])).tolist() == [new_ids[0] + 1, -1]
    with pytest.raises(ValueError, match="added twice"):
        ann_index.add(new_ids[:1], fresh[:1], new_ids[:1] + 1)
    ann_index.remove(new_ids[:1])
    ann_index.add(new_ids[:1], fresh[1:2], new_ids[:1] + 1)  # an id back with another vector: found once, as it is now
    scores, found = ann_index.search(fresh[1:2], 3)
    assert sorted(found[0, :2].tolist()) == new_ids[:2].tolist() and found[0, 2] not in new_ids[:2]
    assert np.allclose(scores[0, :2], 1.0, atol=1e-5)
    ann_index.remove(new_ids)
    ann_index.add(gone, data.vectors[:500], gone + 1)  # back as they were, for the other tests


def test_an_index_grown_4x_is_retrained_and_one_asked_for_flat_drops_its_codes(data) -> None:
    index = _index(data.vectors[:1000], np.arange(1, 1001))
    index.fit(IndexChoice.parse("ivfpq"))
    assert index.params.trained_on == 1000
    index.add(np.arange(1001, 3001), data.vectors[1000:3000], np.arange(1001, 3001))
    assert not index.fit(IndexChoice.parse("ivfpq"))  # 3x: keeps its cells
    index.add(np.arange(3001, 4001), data.vectors[3000:4000], np.arange(3001, 4001))
    assert index.fit(IndexChoice.parse("ivfpq")) and index.params.trained_on == 4000
    assert index.fit(IndexChoice.parse("flat")) and index.kind == FLAT and index.params is None


def test_saved_and_loaded_the_vectors_are_mapped_and_the_results_the_same(tmp_path: Path, data, ann_index) -> None:
    path = tmp_path / "images-key.faiss"
    ann_index.save(path)
    vector_files = list(tmp_path.glob("images-key-*.vectors"))
    assert len(vector_files) == 1
    loaded = VectorIndex.load(path)
    assert loaded.mapped_file == vector_files[0] and loaded.kind == IVFPQ and loaded.params == ann_index.params
    assert (loaded.generation, len(loaded), loaded.digest()) == (7, len(ann_index), ann_index.digest())
    queries = text_queries(data, 10)
    assert np.array_equal(loaded.search(queries, 10)[1], ann_index.search(queries, 10)[1])
    assert np.array_equal(loaded.vectors_of(loaded.ids()[:5])[1], ann_index.vectors_of(loaded.ids()[:5])[1])
    record = read_index_record(path)
    assert record["type"] == IVFPQ and record["params"]["nlist"] == ann_index.params.nlist
    # a change is written to a new vector file; the old one goes once the index file names the new
    loaded.remove(loaded.ids()[:1])
    loaded.save(path)
    assert [p.name for p in tmp_path.glob("images-key-*.vectors")] == [VectorIndex.load(path).mapped_file.name]
    assert len(VectorIndex.load(path)) == len(ann_index) - 1


def test_a_vector_file_that_is_not_the_one_named_is_refused(tmp_path: Path, data) -> None:
    index = _index(data.vectors[:300], np.arange(1, 301))
    path = tmp_path / "images-key.faiss"
    index.save(path)
    (named,) = tmp_path.glob("*.vectors")
    kept = named.read_bytes()
    index.remove(np.array([5]))
    index.add(np.array([9999]), data.vectors[:1], np.array([1]))  # same count, other ids
    other = tmp_path / "other.faiss"
    index.save(other)
    (foreign,) = tmp_path.glob("other-*.vectors")
    named.write_bytes(foreign.read_bytes())  # another index's vector file under this one's name
    with pytest.raises(LibraryError, match="is not the one its index names"):
        VectorIndex.load(path)
    named.write_bytes(kept[: len(kept) - 4])  # truncated
    with pytest.raises(LibraryError, match="truncated"):
        VectorIndex.load(path)
    named.unlink()
    with pytest.raises(LibraryError, match="cannot be read"):
        VectorIndex.load(path)
