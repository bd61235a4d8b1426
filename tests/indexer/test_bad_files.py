from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from conftest import assert_consistent, rows
from images import draw, write_folder
from PIL import Image

from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.indexer.decode import hash_file


def _jpeg_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    draw(seed, (160, 120)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def make_bad_files(folder: Path) -> dict[str, str]:
    """Write one file of each bad kind; returns name -> a word its reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(_jpeg_bytes(1)[:600])
    data = bytearray(_jpeg_bytes(2))
    data[200:] = os.urandom(len(data) - 200)
    (folder / "corrupt.jpg").write_bytes(bytes(data))
    (folder / "notes.png").write_text("these are my notes, not a picture")
    Image.new("RGB", (3000, 2000), "white").save(folder / "bomb.png")
    os.symlink(folder / "loop.jpg", folder / "loop.jpg")
    expected = {
        "zero.jpg": "empty",
        "truncated.jpg": "truncated",
        "corrupt.jpg": "",
        "notes.png": "not an image",
        "bomb.png": "pixels",
        "loop.jpg": "symbolic link",
    }
    bad_name = os.fsencode(folder) + b"/bad-\xff\xfe-name.png"
    with open(bad_name, "wb") as handle:
        draw(3).save(handle, "PNG")
    expected["bad-\\xff\\xfe-name.png"] = "UTF-8"
    return expected


def test_every_bad_kind_is_skipped_with_a_reason(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    good = write_folder(folder, 4)
    expected = make_bad_files(folder)
    report = Indexer(library, encoder, IndexOptions(workers=2, batch_size=2, max_pixels=5_000_000)).run([folder])
    reasons = {Path(f.path).name: f.reason for f in report.skipped}
    assert set(reasons) == set(expected), reasons
    for name, word in expected.items():
        assert word in reasons[name], (name, reasons[name])
    assert sorted(rows(library)) == sorted(str(p) for p in good)
    assert_consistent(library)
    from pixsearch.storage.status import library_status

    assert {Path(p).name for p, _ in library_status(library).skipped} == set(expected)


def test_bad_files_never_cost_what_was_indexed(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    good = write_folder(folder, 3)
    Indexer(library, encoder, IndexOptions(workers=0)).run([folder])
    before = rows(library)
    good[0].write_bytes(b"\xff\xd8\xff garbage")  # an indexed photo is overwritten by junk
    make_bad_files(folder)
    Indexer(library, encoder, IndexOptions(workers=0, max_pixels=5_000_000)).run([folder])
    after = rows(library)
    assert after == before


def test_fixed_file_leaves_the_skipped_list(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write_folder(folder, 2)
    (folder / "later.png").write_bytes(b"")
    first = Indexer(library, encoder, IndexOptions(workers=0)).run([folder])
    assert [Path(f.path).name for f in first.skipped] == ["later.png"]
    draw(7).save(folder / "later.png")
    second = Indexer(library, encoder, IndexOptions(workers=0)).run([folder])
    assert second.skipped == [] and second.embedded == 1
    from pixsearch.storage.status import library_status

    assert library_status(library).skipped == []


def test_file_vanishing_during_the_run_is_skipped(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    paths = write_folder(folder, 3)

    def delete_after_scan(event) -> None:
        if event.phase == "scan" and event.total and paths[1].exists():
            paths[1].unlink()

    report = Indexer(library, encoder, IndexOptions(workers=0)).run([folder], delete_after_scan)
    assert [(Path(f.path).name, "vanished" in f.reason) for f in report.skipped] == [(paths[1].name, True)]
    assert len(rows(library)) == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_permission_denied_is_skipped(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    paths = write_folder(folder, 2)
    paths[0].chmod(0)
    report = Indexer(library, encoder, IndexOptions(workers=0)).run([folder])
    assert ["permission" in f.reason for f in report.skipped] == [True]


def test_hash_file_reports_vanished(tmp_path: Path) -> None:
    result = hash_file(str(tmp_path / "gone.jpg"))
    assert "vanished" in result.reason
