"""A library whose index is IVF-PQ: built by the writer from the stored vectors, checked on open like a
flat one (a stale, foreign, truncated or missing file is rebuilt, never trusted), changed
incrementally, searched like a flat one, and shown by `status`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from clustered import clustered, text_queries

from pixsearch.cli import main
from pixsearch.indexer import writer
from pixsearch.indexer.decode import Prepared
from pixsearch.models import create
from pixsearch.search import SearchService
from pixsearch.search.engine import SearchOptions, hybrid_search
from pixsearch.storage import IMAGES, Library
from pixsearch.storage.ann import FLAT, IVFPQ, IndexChoice
from pixsearch.storage.status import library_status
from pixsearch.storage.vector_index import VectorIndex

COUNT = 2000


@pytest.fixture(scope="module")
def encoder(clip_spec: str):
    return create(clip_spec)


@pytest.fixture(scope="module")
def data(encoder):
    return clustered(COUNT, encoder.dim, seed=5)


def _store(library: Library, model, vectors: np.ndarray, index, first: int) -> None:
    """Rows for `vectors` written as the indexer writes them (one transaction a batch, generation bumped)."""
    for start in range(0, len(vectors), 1000):
        part = vectors[start : start + 1000]
        items = [
            Prepared(f"/photos/{first + start + i}.jpg", f"{first + start + i:064x}", 1, 0.0, 64, 48, None, None, None)
            for i in range(len(part))
        ]
        with library.session() as session:
            writer.store_embedded(session, items, part, model.key, index)
            index.generation = library.bump_generation(session, IMAGES, model.key)


def _library(root: Path, encoder, vectors: np.ndarray, choice: str) -> tuple[Library, object]:
    library = Library.open(root)
    with library.session() as session:
        model = library.use_model(session, str(encoder.spec), encoder.preprocess_id, encoder.dim)
        library.set_index_choice(session, IndexChoice.parse(choice))
    with library.writing("test"):
        index = library.load_index(IMAGES, model)
        _store(library, model, vectors, index, 0)
        library.save_index(IMAGES, model.key, index)  # the writer builds the IVF-PQ part here
    return library, model


def _copy(tmp_path: Path, ann_library) -> tuple[Library, object]:
    """A copy of the IVF-PQ library, to change."""
    source, model = ann_library
    shutil.copytree(source.root, tmp_path / "copy")
    return Library.open(tmp_path / "copy"), model


def _remove(library: Library, model, index, image_ids: list[int]) -> None:
    """Photos removed as the indexer removes them (one transaction, generation bumped)."""
    with library.session() as session:
        writer.delete_images(session, image_ids, index)
        index.generation = library.bump_generation(session, IMAGES, model.key)


@pytest.fixture(scope="module")
def ann_library(tmp_path_factory, encoder, data):
    return _library(tmp_path_factory.mktemp("ann") / "library", encoder, data.vectors, "ivfpq")


@pytest.fixture(scope="module")
def flat_library(tmp_path_factory, ann_library):
    """The same rows, searched exactly."""
    source, model = ann_library
    root = tmp_path_factory.mktemp("flat") / "library"
    shutil.copytree(source.root, root)
    library = Library.open(root)
    with library.session() as session:
        library.set_index_choice(session, IndexChoice.parse("flat"))
    with library.writing("test"):
        assert library.rebuild_index(IMAGES, model).kind == FLAT
    return library, model


def test_the_writer_builds_the_type_asked_for_and_status_shows_it(ann_library) -> None:
    library, model = ann_library
    index = library.load_index(IMAGES, model, persist=False)
    assert index.kind == IVFPQ and index.mapped_file is not None and len(index) == COUNT
    status = library_status(library)
    assert status.index_type.startswith("ivfpq (nlist") and status.index_choice == "ivfpq"
    assert status.index_params["nlist"] == index.params.nlist and status.index_params["trained_on"] == COUNT
    assert status.index_bytes > COUNT * model.dim * 4  # the vector file is counted


def test_an_ann_library_answers_like_a_flat_one(ann_library, flat_library, data) -> None:
    ann, flat = SearchService(ann_library[0]), SearchService(flat_library[0])
    for query in text_queries(data, 8):
        assert [h.image_id for h in ann.vector_to_image(query, 5)] == [
            h.image_id for h in flat.vector_to_image(query, 5)
        ]
    options = SearchOptions(cutoff_z=None)
    for words in ("a red circle", "blue square"):
        found, truth = (hybrid_search(service, words, k=8, options=options).hits for service in (ann, flat))
        assert [h.image_id for h in found] == [h.image_id for h in truth]
        assert np.allclose([h.score for h in found], [h.score for h in truth], atol=1e-5)
    image_ids, vectors = ann.vectors_of([5, 10**6, 7])  # from the mapped vector file, in the order asked
    assert image_ids == [5, 7] and np.allclose(vectors, flat.vectors_of([5, 7])[1])


def test_stale_foreign_truncated_or_missing_files_are_rebuilt(tmp_path: Path, ann_library, encoder, data) -> None:
    source, model = ann_library
    root = tmp_path / "copy"
    shutil.copytree(source.root, root)
    library = Library.open(root)
    path = library.index_path(IMAGES, model.key)
    (vectors,) = library.index_dir.glob(f"{path.stem}-*.vectors")
    ids = library.load_index(IMAGES, model).ids()
    with library.session() as session:  # the database moved on; the files did not
        generation = library.bump_generation(session, IMAGES, model.key)
    assert library.load_index(IMAGES, model, persist=False).kind == IVFPQ  # brought up to date in memory
    with library.writing("test"):
        rebuilt = library.load_index(IMAGES, model)  # ... and saved by a writer
    assert np.array_equal(rebuilt.ids(), ids) and VectorIndex.load(path).generation == generation
    (vectors,) = library.index_dir.glob(f"{path.stem}-*.vectors")
    good = vectors.read_bytes()
    vectors.write_bytes(good[:-2048])  # the vector file alone is truncated
    assert library.load_index(IMAGES, model, persist=False).mapped_file is None
    vectors.unlink()  # or gone
    assert library.load_index(IMAGES, model, persist=False).mapped_file is None
    vectors.write_bytes(good)
    assert library.load_index(IMAGES, model, persist=False).mapped_file == vectors
    # another library's pair of files, with another generation and other vectors
    other, other_model = _library(tmp_path / "other", encoder, data.vectors[:400], "flat")
    for file in other.index_dir.glob("images-*"):
        shutil.copy(file, library.index_dir / file.name)
    assert np.array_equal(library.load_index(IMAGES, model, persist=False).ids(), ids)


def test_photos_added_and_removed_reach_the_ann_index(tmp_path: Path, ann_library, encoder, data) -> None:
    library, model = _copy(tmp_path, ann_library)
    fresh = clustered(50, encoder.dim, seed=8).vectors
    with library.writing("test"):
        index = library.load_index(IMAGES, model)
        trained = index.params
        _remove(library, model, index, list(range(1, 101)))
        _store(library, model, fresh, index, COUNT)
        library.save_index(IMAGES, model.key, index)
    index = library.load_index(IMAGES, model, persist=False)
    assert index.kind == IVFPQ and index.params == trained and len(index) == COUNT - 100 + 50  # not retrained
    service = SearchService(library)
    new_ids = [service.vector_to_image(vector, 1)[0].image_id for vector in fresh[:10]]
    assert all(image_id > COUNT for image_id in new_ids)
    assert not {h.image_id for q in data.vectors[:100] for h in service.vector_to_image(q, 3)} & set(range(1, 101))


def _stored_digest(library: Library, model):
    with library.session() as session:
        return library.vector_digest(session, IMAGES, model.key)


def test_a_reader_catches_up_with_a_writer_between_its_saves(tmp_path: Path, ann_library, encoder, data) -> None:
    """A writer commits batches but writes the index file only every few minutes: a reader meanwhile
    applies the changes to the file's index in memory (no rebuild, no retraining), and finds them all."""
    library, model = _copy(tmp_path, ann_library)
    fresh = clustered(40, encoder.dim, seed=9).vectors
    with library.writing("test"):
        index = library.load_index(IMAGES, model)
        trained, mapped = index.params, index.mapped_file
        _remove(library, model, index, list(range(1, 51)))
        _store(library, model, fresh, index, COUNT)  # committed; the index file is not written
        reader = library.load_index(IMAGES, model, persist=False)
        assert reader.mapped_file == mapped and reader.params == trained  # the file's index, not a rebuild
        assert reader.digest() == _stored_digest(library, model) and reader.generation == index.generation
        service = SearchService(library)
        assert [service.vector_to_image(v, 1)[0].image_id for v in fresh[:5]] == list(range(COUNT + 1, COUNT + 6))
        assert not {h.image_id for q in data.vectors[:50] for h in service.vector_to_image(q, 3)} & set(range(1, 51))


def test_an_id_given_out_again_is_not_trusted_from_the_file(tmp_path: Path, ann_library, encoder) -> None:
    """SQLite gives the largest id out again once its row is gone: the file's vector under that id is
    another photo's, so the reader rebuilds rather than trust the file."""
    library, model = _copy(tmp_path, ann_library)
    fresh = clustered(1, encoder.dim, seed=10).vectors
    with library.writing("test"):
        index = library.load_index(IMAGES, model)
        last = int(index.ids().max())
        _remove(library, model, index, [int(index.owners_of(np.asarray([last]))[0])])
        _store(library, model, fresh, index, COUNT)
        assert int(index.ids().max()) == last  # the id came back, under another photo
        reader = library.load_index(IMAGES, model, persist=False)
    assert reader.mapped_file is None  # rebuilt from the stored vectors
    found, vectors = reader.vectors_of(np.asarray([last]))
    assert found[0] and np.array_equal(vectors[0], fresh[0])


def test_the_cli_records_the_index_type_and_status_prints_it(tmp_path: Path, clip_spec: str, capsys, monkeypatch):
    from images import write_folder

    monkeypatch.setenv("PIXSEARCH_LIBRARY", str(tmp_path / "library"))
    write_folder(tmp_path / "photos", 3)
    common = [str(tmp_path / "photos"), "--model", clip_spec, "--workers", "0"]
    assert main(["index", *common, "--index-type", "ivfpq:nprobe=many"]) == 2
    assert "nprobe must be an integer, got 'many'" in capsys.readouterr().err
    assert main(["index", *common, "--index-type", "ivfpq:nprobe=8"]) == 0
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    # three photos are too few to train cells on: searched exactly until there are enough
    assert "index     flat (exact inner product)" in out and "type asked for: ivfpq:nprobe=8" in out
    assert library_status(Library.open(tmp_path / "library")).index_type.startswith(FLAT)
