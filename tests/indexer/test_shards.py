"""Vector shards left in a library (what a Ray run killed between writing and merging leaves) are
merged by the next run of any kind, idempotently. These tests need no Ray: a shard is a file."""

from __future__ import annotations

import logging
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_consistent, rows, run_index
from images import draw, write_folder
from sqlalchemy import select

from pixsearch.atomic import TMP_SUFFIX
from pixsearch.errors import LibraryError
from pixsearch.indexer import shards
from pixsearch.indexer.decode import DecodeOptions, Failure, PhotoFacts, prepare
from pixsearch.models.preprocess import stack
from pixsearch.storage import Library
from pixsearch.storage.library import model_key
from pixsearch.storage.schema import Embedding, ImageRow
from pixsearch.storage.status import library_status


def _embedded(encoder, paths: list[Path]) -> shards.EmbeddedBatch:
    """The photos decoded and embedded as a Ray actor does it (same functions), without Ray."""
    prepared = [prepare(str(path), DecodeOptions(encoder.transform)) for path in paths]
    vectors = encoder.encode_pixels(stack([item.pixels for item in prepared]))
    return shards.EmbeddedBatch([item.facts() for item in prepared], vectors, [])


def _leave_shard(library: Library, encoder, paths: list[Path], name: str = "job-000000.npz") -> Path:
    key = model_key(str(encoder.spec), encoder.preprocess_id)
    return shards.write_shard(shards.folder_of(library.root) / name, key, _embedded(encoder, paths))


def _stored_vector(library: Library, path: Path) -> np.ndarray:
    with library.session() as session:
        blob = session.execute(
            select(Embedding.vector).join(ImageRow, Embedding.image_id == ImageRow.id).where(ImageRow.path == str(path))
        ).scalar_one()
    return np.frombuffer(blob, dtype=np.float32)


def test_shard_round_trip_keeps_every_field(tmp_path: Path) -> None:
    photos = [
        PhotoFacts("/p/a.jpg", "ab" * 32, 1234, 1_700_000_000.123456, 640, 480, datetime(2021, 7, 14, 18, 30, 5), "X"),
        PhotoFacts("/p/b.png", "cd" * 32, 99, 1.5, 3, 2, None, None),
    ]
    vectors = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    batch = shards.EmbeddedBatch(photos, vectors, [Failure("/p/c.jpg", "empty file (0 bytes)")])
    path = shards.write_shard(tmp_path / "s.npz", "k" * 16, batch)
    shard = shards.read_shard(path)
    assert shard.model_key == "k" * 16
    assert shard.batch.photos == photos and shard.batch.failures == batch.failures
    np.testing.assert_array_equal(shard.batch.vectors, vectors)


def test_shards_of_a_killed_run_are_merged_once_even_if_merged_twice(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    first = write_folder(folder, 3)
    run_index(library, encoder, folder)
    later = write_folder(folder, 4, start=10)
    shard = _leave_shard(library, encoder, later[:3])  # the killed run embedded three of the four
    shutil.copy(shard, shard.with_name("job-000001.npz"))  # and the same batch twice (a shard merged twice)
    waiting = library_status(library)
    assert (waiting.waiting_shards, waiting.waiting_shard_bytes) == (2, 2 * shard.stat().st_size)
    report = run_index(library, encoder, folder)
    assert library_status(library).waiting_shards == 0
    assert (report.recovered, report.embedded, report.unchanged) == (3, 1, 6)
    assert sorted(rows(library)) == sorted(str(p) for p in first + later)
    np.testing.assert_allclose(_stored_vector(library, later[0]), _embedded(encoder, [later[0]]).vectors[0], atol=1e-6)
    assert shards.pending(shards.folder_of(library.root)) == []
    before = rows(library)
    _leave_shard(library, encoder, later[:3], "again-000000.npz")  # merged again after a finished run
    again = run_index(library, encoder, folder)
    assert (again.recovered, again.embedded) == (0, 0)
    assert rows(library) == before  # same image and vector ids: nothing replaced
    assert_consistent(library)


def test_a_shard_older_than_the_files_follows_the_incremental_rules(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write_folder(folder, 2)
    run_index(library, encoder, folder)
    later = write_folder(folder, 3, start=10)
    _leave_shard(library, encoder, later)
    later[0].unlink()  # deleted after the killed run embedded it
    draw(99).save(later[1])  # changed after it
    os.utime(later[1], (2_000_000, 2_000_000))
    moved = folder / "sub" / "moved.png"
    moved.parent.mkdir()
    shutil.move(later[2], moved)  # moved after it
    report = run_index(library, encoder, folder)
    assert (report.recovered, report.removed, report.moved, report.embedded) == (3, 1, 1, 1)
    assert sorted(rows(library)) == sorted(str(p) for p in [*folder.glob("img_*.png"), moved])
    np.testing.assert_allclose(_stored_vector(library, later[1]), _embedded(encoder, [later[1]]).vectors[0], atol=1e-6)
    assert_consistent(library)


def test_foreign_broken_and_stray_shards_are_discarded(library, encoder, tmp_path: Path, caplog) -> None:
    folder = tmp_path / "photos"
    write_folder(folder, 2)
    run_index(library, encoder, folder)
    outside = write_folder(tmp_path / "elsewhere", 1)  # not a folder of this library
    new = write_folder(folder, 1, start=10)
    other = shards.write_shard(shards.folder_of(library.root) / "a.npz", "0" * 16, _embedded(encoder, new))
    broken = shards.folder_of(library.root) / "b.npz"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    stray = _leave_shard(library, encoder, outside, "c.npz")
    torn = shards.folder_of(library.root) / f".d.npz.123.abcd{TMP_SUFFIX}"
    torn.write_bytes(b"half a shard")
    with caplog.at_level(logging.WARNING, logger="pixsearch.indexer.run"):
        report = run_index(library, encoder, folder)
    assert (report.recovered, report.embedded) == (0, 1)  # the new photo is embedded here, not taken from a.npz
    assert str(outside[0]) not in rows(library) and len(rows(library)) == 3
    assert not any(path.exists() for path in (other, broken, stray, torn))
    assert "another model" in caplog.text and "unreadable" in caplog.text
    assert_consistent(library)


@pytest.mark.parametrize("field", ["vectors", "format"])
def test_read_shard_names_the_file_and_the_problem(tmp_path: Path, field: str) -> None:
    photos = [PhotoFacts("/p/a.jpg", "ab" * 32, 1, 1.0, 2, 2, None, None)]
    vectors = np.zeros((1 if field == "format" else 2, 4), dtype=np.float32)
    path = tmp_path / "bad.npz"
    if field == "vectors":
        np.savez(path, vectors=vectors, meta=np.array('{"format": 1, "model_key": "k", "photos": [], "failures": []}'))
    else:
        shards.write_shard(path, "k", shards.EmbeddedBatch(photos, vectors))
        with np.load(path) as data:
            meta = str(data["meta"]).replace('"format": 1', '"format": 99')
        np.savez(path, vectors=vectors, meta=np.array(meta))
    with pytest.raises(LibraryError, match=re.escape(f"shard {path} is unreadable")) as error:
        shards.read_shard(path)
    assert ("99" if field == "format" else "shape") in str(error.value)
