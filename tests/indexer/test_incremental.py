from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import assert_consistent, rows, run_index
from images import draw, write_folder

from pixsearch.errors import ConfigError, ModelMismatchError
from pixsearch.models import create


def test_first_run_indexes_everything_and_second_run_nothing(library, encoder, tmp_path: Path) -> None:
    write_folder(tmp_path / "photos" / "sub", 5)
    write_folder(tmp_path / "photos", 4, start=10, fmt="jpg")
    first = run_index(library, encoder, tmp_path / "photos")
    assert (first.scanned, first.embedded, first.skipped) == (9, 9, [])
    second = run_index(library, encoder, tmp_path / "photos")
    assert (second.unchanged, second.embedded) == (9, 0)
    assert_consistent(library)


def test_added_file_is_embedded(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write_folder(folder, 3)
    run_index(library, encoder, folder)
    write_folder(folder, 1, start=50)
    report = run_index(library, encoder, folder)
    assert (report.embedded, report.unchanged) == (1, 3)
    assert str(folder / "img_0050.png") in rows(library)


def test_modified_file_is_re_embedded_in_place(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    paths = write_folder(folder, 3)
    run_index(library, encoder, folder)
    image_id, vector_id = rows(library)[str(paths[0])]
    draw(99).save(paths[0])
    os.utime(paths[0], (1_000_000, 1_000_000))
    report = run_index(library, encoder, folder)
    assert report.embedded == 1
    new_image_id, new_vector_id = rows(library)[str(paths[0])]
    assert new_image_id == image_id and new_vector_id != vector_id
    assert_consistent(library)


def test_touched_file_is_not_re_embedded(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    paths = write_folder(folder, 2)
    run_index(library, encoder, folder)
    before = rows(library)
    os.utime(paths[0], (2_000_000, 2_000_000))
    report = run_index(library, encoder, folder)
    assert (report.touched, report.embedded) == (1, 0)
    assert rows(library) == before


def test_deleted_file_leaves_index_and_database(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    paths = write_folder(folder, 4)
    run_index(library, encoder, folder)
    paths[1].unlink()
    report = run_index(library, encoder, folder)
    assert report.removed == 1
    assert str(paths[1]) not in rows(library) and len(rows(library)) == 3
    assert_consistent(library)


def test_moved_file_keeps_its_vector_and_appears_once(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    paths = write_folder(folder, 3)
    run_index(library, encoder, folder)
    old = rows(library)[str(paths[2])]
    (folder / "elsewhere").mkdir()
    moved = folder / "elsewhere" / "renamed.png"
    shutil.move(paths[2], moved)
    report = run_index(library, encoder, folder)
    assert (report.moved, report.embedded, report.removed) == (1, 0, 0)
    after = rows(library)
    assert after[str(moved)] == old and str(paths[2]) not in after and len(after) == 3
    assert_consistent(library)


def test_copied_file_reuses_the_vector(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    paths = write_folder(folder, 2)
    run_index(library, encoder, folder)
    shutil.copy(paths[0], folder / "copy.png")
    report = run_index(library, encoder, folder)
    assert (report.copied, report.embedded) == (1, 0)
    assert len(rows(library)) == 3
    assert_consistent(library)


def test_other_model_is_rejected_then_reindexed_never_mixed(library, encoder, tmp_path: Path, tiny_siglip_dir) -> None:
    folder = tmp_path / "photos"
    write_folder(folder, 3)
    run_index(library, encoder, folder)
    other = create(f"siglip:{tiny_siglip_dir}")
    with pytest.raises(ModelMismatchError, match="--reindex"):
        run_index(library, other, folder)
    report = run_index(library, other, folder, reindex=True)
    assert report.embedded == 3
    with library.session() as session:
        model = library.active_model(session)
        from sqlalchemy import select

        from pixsearch.storage.schema import Embedding

        keys = set(session.execute(select(Embedding.model_key)).scalars())
    assert model.spec == f"siglip:{tiny_siglip_dir}" and keys == {model.key}
    assert_consistent(library)


def test_missing_root_is_an_error_not_a_mass_delete(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write_folder(folder, 2)
    run_index(library, encoder, folder)
    with pytest.raises(ConfigError, match="not a folder"):
        run_index(library, encoder, tmp_path / "unmounted")
    assert len(rows(library)) == 2


def test_only_the_scanned_root_is_pruned(library, encoder, tmp_path: Path) -> None:
    write_folder(tmp_path / "a", 2)
    write_folder(tmp_path / "b", 2, start=20)
    run_index(library, encoder, tmp_path / "a")
    run_index(library, encoder, tmp_path / "b")
    assert len(rows(library)) == 4
