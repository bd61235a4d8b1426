from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import numpy as np
from conftest import rows, run_index
from images import draw
from PIL import Image

from pixsearch.imageio import load_image
from pixsearch.storage.schema import ImageRow


def test_every_supported_format_is_indexed(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, fmt in enumerate(["JPEG", "PNG", "WEBP", "BMP", "TIFF"]):
        draw(i).save(folder / f"p{i}.{fmt.lower()}", fmt)
    frames = [draw(10), draw(11)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    (folder / "ignored.txt").write_text("not scanned")
    report = run_index(library, encoder, folder)
    assert report.skipped == [] and report.embedded == 6
    assert sorted(Path(p).suffix for p in rows(library)) == [".bmp", ".gif", ".jpeg", ".png", ".tiff", ".webp"]


def test_gif_uses_the_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    red.save(path, save_all=True, append_images=[blue])
    pixel = load_image(path).getpixel((4, 4))
    assert pixel[0] > 200 and pixel[2] < 50


def _exif_jpeg(path: Path, orientation: int) -> None:
    image = Image.new("RGB", (60, 30), "white")
    image.paste((255, 0, 0), (0, 0, 30, 30))  # left half red
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS 5D"
    exif.get_ifd(0x8769)[0x9003] = "2021:07:14 18:30:05"
    image.save(path, "JPEG", exif=exif.tobytes(), quality=95)


def test_exif_rotation_date_and_camera(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    _exif_jpeg(folder / "rotated.jpg", orientation=6)  # stored landscape, shown portrait
    run_index(library, encoder, folder)
    with library.session() as session:
        row = session.query(ImageRow).one()
    assert (row.width, row.height) == (30, 60)
    assert row.taken_at == datetime(2021, 7, 14, 18, 30, 5)
    assert row.camera == "Canon EOS 5D"
    rotated = np.asarray(load_image(folder / "rotated.jpg"))
    assert rotated.shape[:2] == (60, 30) and rotated[5, 15, 0] > 200 and rotated[5, 15, 1] < 80  # red on top


def test_draft_decoding_keeps_the_vector_close(encoder, tmp_path: Path) -> None:
    from pixsearch.indexer.decode import DecodeOptions, prepare

    big = draw(5, (1600, 1200))
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=95)
    path = tmp_path / "big.jpg"
    path.write_bytes(buffer.getvalue())
    fast = prepare(str(path), DecodeOptions(encoder.transform, draft=True))
    full = prepare(str(path), DecodeOptions(encoder.transform, draft=False))
    assert (fast.width, fast.height) == (full.width, full.height) == (1600, 1200)
    a, b = encoder.encode_pixels(fast.pixels[None]), encoder.encode_pixels(full.pixels[None])
    assert float(a[0] @ b[0]) > 0.99
