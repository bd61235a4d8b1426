"""Reading a library's own photos (web, tagging, reranking): regular files below its folders, no links."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from images import draw

from pixsearch.errors import BadImageError
from pixsearch.photos import load_photo
from pixsearch.storage import Library


@pytest.fixture
def library(tmp_path: Path) -> Library:
    library = Library.open(tmp_path / "library")
    (tmp_path / "photos").mkdir()
    with library.session() as session:
        library.add_photo_roots(session, [tmp_path / "photos"])
    yield library
    library.close()


def test_a_photo_below_the_folders_is_read(library: Library, tmp_path: Path) -> None:
    draw(1).save(tmp_path / "photos" / "a.png")
    assert load_photo(library, str(tmp_path / "photos" / "a.png")).size == (64, 48)


@pytest.mark.parametrize(
    "swap, reason",
    [
        (lambda path: os.symlink("/etc/passwd", path), "symbolic link"),
        (lambda path: os.mkfifo(path), "not a regular file (a FIFO)"),
        (lambda path: path.mkdir(), "not a regular file (a folder)"),
    ],
)
def test_a_photo_swapped_after_indexing_is_refused(library: Library, tmp_path: Path, swap, reason: str) -> None:
    path = tmp_path / "photos" / "a.jpg"
    swap(path)
    with pytest.raises(BadImageError, match=re.escape(reason)):
        load_photo(library, str(path))


def test_a_file_outside_the_folders_or_through_a_linked_folder_is_refused(library: Library, tmp_path: Path) -> None:
    draw(1).save(tmp_path / "outside.png")
    with pytest.raises(BadImageError, match="outside the library's photo folders"):
        load_photo(library, str(tmp_path / "outside.png"))
    os.symlink(tmp_path, tmp_path / "photos" / "sub")
    with pytest.raises(BadImageError, match="symbolic link"):
        load_photo(library, str(tmp_path / "photos" / "sub" / "outside.png"))


def test_a_library_without_recorded_folders_reads_nothing(tmp_path: Path) -> None:
    draw(1).save(tmp_path / "a.png")
    library = Library.open(tmp_path / "old-library")
    with pytest.raises(BadImageError, match="run `pixsearch index` on its folders again"):
        load_photo(library, str(tmp_path / "a.png"))
    library.close()
