"""Writers sharing a library: one at a time, a clear "busy" message, nothing overwritten, an index file
never trusted on its generation alone, a re-index that switches models only once it is complete."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_consistent, run_index
from images import write_folder
from sqlalchemy import select

from pixsearch.errors import LibraryBusyError, LibraryError, ModelMismatchError
from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import create
from pixsearch.search import SearchService
from pixsearch.storage import IMAGES, Library
from pixsearch.storage.lock import WriterLock
from pixsearch.storage.schema import Embedding, ImageRow
from pixsearch.storage.status import library_status
from pixsearch.storage.vector_index import VectorIndex


def _cli(library: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PIXSEARCH_LIBRARY": str(library), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "pixsearch.cli", "index", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_writer_is_told_who_holds_the_library(tmp_path: Path, clip_spec: str) -> None:
    write_folder(tmp_path / "photos", 2)
    library = tmp_path / "library"
    library.mkdir()
    holder = WriterLock(library)
    holder.acquire("pixsearch tag")
    try:
        process = _cli(library, str(tmp_path / "photos"), "--model", clip_spec)
        out, err = process.communicate(timeout=300)
    finally:
        holder.release()
    assert process.returncode == 75, err
    assert f"is busy: pixsearch tag (pid {os.getpid()}) is writing to it" in err
    assert "--wait" in err


def test_two_index_runs_at_once_keep_every_photo(tmp_path: Path, clip_spec: str) -> None:
    write_folder(tmp_path / "a", 21)
    write_folder(tmp_path / "b", 13, start=100)
    library = tmp_path / "library"
    common = ["--model", clip_spec, "--batch-size", "2", "--workers", "0", "--wait", "300"]
    runs = [_cli(library, str(tmp_path / name), *common) for name in ("a", "b")]
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
    opened = Library.open(library)
    assert_consistent(opened)
    with opened.session() as session:
        assert session.execute(select(ImageRow.id)).scalars().all().__len__() == 34
        model = opened.active_model(session)
    saved = VectorIndex.load(opened.index_path(IMAGES, model.key))
    assert len(saved) == 34
    # and every photo can be found by its own vector
    service = SearchService(opened)
    with opened.session() as session:
        vectors = session.execute(select(Embedding.image_id, Embedding.vector)).all()
    for image_id, blob in vectors:
        assert service.vector_to_image(np.frombuffer(blob, dtype=np.float32), 1)[0].image_id == image_id


def test_an_index_file_that_disagrees_with_the_rows_is_rebuilt(library, encoder, tmp_path: Path) -> None:
    write_folder(tmp_path / "photos", 6)
    run_index(library, encoder, tmp_path / "photos")
    with library.session() as session:
        model = library.active_model(session)
    path = library.index_path(IMAGES, model.key)
    damaged = VectorIndex.load(path)
    damaged.remove(damaged.ids()[:2])  # same generation, two vectors fewer: what an overwrite leaves
    with library.writing("test"):
        library.save_index(IMAGES, model.key, damaged)
    assert len(library.load_index(IMAGES, model)) == 6
    report = run_index(library, encoder, tmp_path / "photos")  # a writer repairs the file on disk
    assert report.embedded == 0 and len(VectorIndex.load(path)) == 6


def test_only_the_lock_holder_writes_index_files(library, encoder, tmp_path: Path) -> None:
    write_folder(tmp_path / "photos", 2)
    run_index(library, encoder, tmp_path / "photos")
    with library.session() as session:
        model = library.active_model(session)
    index = library.load_index(IMAGES, model)
    with pytest.raises(LibraryError, match="without holding its writer lock"):
        library.save_index(IMAGES, model.key, index)


def test_an_indexer_in_the_same_process_waits_its_turn(library, encoder, tmp_path: Path) -> None:
    write_folder(tmp_path / "photos", 2)
    other = Library.open(library.root)  # another handle, as another process would have
    with other.writing("pixsearch index-texts"):
        with pytest.raises(LibraryBusyError, match=r"pixsearch index-texts \(pid \d+\)"):
            run_index(library, encoder, tmp_path / "photos", lock_wait_s=0.2)
    assert run_index(library, encoder, tmp_path / "photos").embedded == 2


def test_temp_files_of_a_killed_writer_are_removed(library, encoder, tmp_path: Path) -> None:
    write_folder(tmp_path / "photos", 2)
    leftovers = [library.index_dir / ".images-x.faiss.123.ab12cd34.tmp", library.index_dir / "images-x.faiss.q1w2.tmp"]
    for leftover in leftovers:
        leftover.write_bytes(b"\0" * 1000)
    run_index(library, encoder, tmp_path / "photos")
    assert not [p for p in leftovers if p.exists()]


def test_library_files_follow_the_umask_like_photos(library, encoder, tmp_path: Path) -> None:
    write_folder(tmp_path / "photos", 2)
    old = os.umask(0o022)
    try:
        run_index(library, encoder, tmp_path / "photos")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in library.index_dir.iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes


def _other_clip(clip_spec: str, tmp_path: Path) -> str:
    """The same tiny CLIP under another path: another spec, so another model to switch to."""
    target = tmp_path / "clip-b"
    shutil.copytree(clip_spec.split(":", 1)[1], target)
    return f"clip:{target}"


class _Interrupted(Exception):
    pass


class _DiesAfter:
    """An encoder that stops the run after `batches` batches: what a kill leaves (each batch commits)."""

    def __init__(self, encoder, batches: int) -> None:
        self._encoder, self._left = encoder, batches

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def encode_pixels(self, pixels):
        if self._left == 0:
            raise _Interrupted
        self._left -= 1
        return self._encoder.encode_pixels(pixels)


def _searchable(library: Library) -> tuple[str, int]:
    service = SearchService(library)
    hits = service.vector_to_image(np.ones(service.model.dim, dtype=np.float32), 1000)
    return service.model.spec, len(hits)


def test_an_interrupted_reindex_keeps_the_old_model_until_complete(library, encoder, clip_spec, tmp_path) -> None:
    folder = tmp_path / "photos"
    write_folder(folder, 12)
    run_index(library, encoder, folder)
    new = create(_other_clip(clip_spec, tmp_path))
    with pytest.raises(_Interrupted):
        run_index(library, _DiesAfter(new, 2), folder, reindex=True, batch_size=2)
    assert _searchable(library) == (clip_spec, 12)  # the old model still answers, for every photo
    assert library_status(library).pending_model == str(new.spec)
    with pytest.raises(ModelMismatchError, match="an earlier re-index to it did not finish"):
        run_index(library, new, folder)
    report = run_index(library, new, folder, reindex=True)
    assert report.embedded == 12 - 4 and report.switch_missing == 0
    assert _searchable(library) == (str(new.spec), 12)
    with library.session() as session:
        assert {key for key in session.execute(select(Embedding.model_key)).scalars()} == {
            library.active_model(session).key
        }
    assert library_status(library).pending_model is None
    assert_consistent(library)


def test_a_reindex_of_some_folders_does_not_switch_the_others_away(library, encoder, clip_spec, tmp_path) -> None:
    write_folder(tmp_path / "a", 3)
    write_folder(tmp_path / "b", 2, start=10)
    Indexer(library, encoder, IndexOptions(workers=0)).run([tmp_path / "a", tmp_path / "b"])
    new = create(_other_clip(clip_spec, tmp_path))
    report = run_index(library, new, tmp_path / "a", reindex=True)
    assert report.switch_missing == 2
    assert _searchable(library) == (clip_spec, 5)
    report = Indexer(library, new, IndexOptions(workers=0, reindex=True)).run([tmp_path / "a", tmp_path / "b"])
    assert report.switch_missing == 0 and _searchable(library) == (str(new.spec), 5)
