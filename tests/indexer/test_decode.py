"""Reading and decoding within bounds: files are streamed, refused by size before they are read,
opened through no link and never as a FIFO; thin images are refused before they cost gigabytes."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from images import draw
from PIL import Image

from pixsearch.errors import BadImageError
from pixsearch.imageio import load_image
from pixsearch.indexer.decode import DecodeOptions, Failure, Hashed, ReadOptions, hash_file, prepare
from pixsearch.models.preprocess import ImageTransform, apply_transform

TRANSFORM = ImageTransform(224)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _finishes(call: Callable[[], object], unblock: Callable[[], None], timeout: float = 5.0) -> object:
    """call() in a thread; if it is still running after `timeout`, unblock it and fail."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        unblock()
        thread.join(timeout)
        pytest.fail(f"blocked for {timeout}s")
    return result[0]


def _open_writer(fifo: Path) -> Callable[[], None]:
    """Opening and closing the write end of a FIFO ends a reader that waits on it."""
    return lambda: os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_hash_is_streamed_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    data = _png(draw(1)) + os.urandom(3 * 2**20 + 17)  # several chunks, the last one short
    path.write_bytes(data)
    result = hash_file(str(path), ReadOptions(roots=(str(tmp_path),)))
    assert isinstance(result, Hashed)
    assert (result.content_hash, result.size) == (hashlib.sha256(data).hexdigest(), len(data))
    prepared = prepare(str(path), DecodeOptions(TRANSFORM, read=ReadOptions(roots=(str(tmp_path),))))
    assert (prepared.content_hash, prepared.size) == (result.content_hash, result.size)


def test_files_over_the_byte_limit_are_refused_unread(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse.jpg"
    with open(sparse, "wb") as handle:
        os.truncate(handle.fileno(), 3 * 2**30)  # 3 GiB that cost no disk, and must cost no memory
    for result in (hash_file(str(sparse)), prepare(str(sparse), DecodeOptions(TRANSFORM))):
        assert isinstance(result, Failure)
        assert result.reason == "file is 3072 MiB (3221225472 bytes), over the limit of 512 MiB"
    small = tmp_path / "small.png"
    small.write_bytes(_png(draw(2)))
    refused = hash_file(str(small), ReadOptions(max_bytes=100))
    assert "over the limit of 100 bytes" in refused.reason


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    read = ReadOptions(roots=(str(tmp_path),))
    result = _finishes(lambda: hash_file(str(fifo), read), _open_writer(fifo))
    assert result == Failure(str(fifo), "not a regular file (a FIFO)")
    result = _finishes(lambda: prepare(str(fifo), DecodeOptions(TRANSFORM, read=read)), _open_writer(fifo))
    assert result == Failure(str(fifo), "not a regular file (a FIFO)")


def test_links_and_paths_outside_the_roots_are_refused(tmp_path: Path) -> None:
    photos, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    (photos / "album").mkdir(parents=True)
    elsewhere.mkdir()
    draw(3).save(elsewhere / "real.png")
    os.symlink(elsewhere / "real.png", photos / "link.png")
    os.symlink(elsewhere, photos / "album" / "linked")
    read = ReadOptions(roots=(str(photos),))
    assert "symbolic link" in hash_file(str(photos / "link.png"), read).reason
    assert "symbolic link" in hash_file(str(photos / "album" / "linked" / "real.png"), read).reason
    assert "outside" in hash_file(str(elsewhere / "real.png"), read).reason
    assert "vanished" in hash_file(str(photos / "gone.png"), read).reason


def test_thin_images_are_refused_before_the_resize() -> None:
    with pytest.raises(ValueError, match=r"aspect ratio 200:1 too extreme"):
        apply_transform(TRANSFORM, Image.new("RGB", (1000, 5)))
    with pytest.raises(ValueError, match=r"aspect ratio 1:200 too extreme"):
        apply_transform(ImageTransform(224, mode="squash"), Image.new("RGB", (5, 1000)))
    assert apply_transform(TRANSFORM, draw(4, (3000, 300))).shape == (3, 224, 224)  # a 10:1 panorama


def test_query_images_and_uploads_have_the_same_bounds(tmp_path: Path) -> None:
    line = _png(Image.new("L", (100_000, 1)))
    with pytest.raises(BadImageError, match=r"uploaded image: aspect ratio 100000:1 too extreme"):
        load_image(line)
    with pytest.raises(BadImageError, match=r"over the limit of 100 bytes"):
        load_image(_png(draw(5)), max_bytes=100)
    fifo = tmp_path / "query.jpg"
    os.mkfifo(fifo)

    def load() -> str:
        try:
            load_image(fifo)
        except BadImageError as error:
            return error.reason
        return "decoded"

    assert _finishes(load, _open_writer(fifo)) == "not a regular file"


def test_grayscale_and_sixteen_bit(tmp_path: Path) -> None:
    gray = draw(6, (640, 480)).convert("L")
    assert np.array_equal(apply_transform(TRANSFORM, gray), apply_transform(TRANSFORM, gray.convert("RGB")))
    path = tmp_path / "sixteen.png"
    Image.fromarray(np.full((48, 64), 32768, dtype=np.uint16)).save(path)
    assert load_image(path).getpixel((5, 5)) == (128, 128, 128)  # not clipped to white
