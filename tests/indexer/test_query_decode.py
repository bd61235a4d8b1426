"""A photo used as a query decodes to exactly the pixels it was indexed with (JPEG draft mode included),
so it finds itself first with a score of 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import run_index
from PIL import Image, ImageDraw

from pixsearch.imageio import load_image, load_query_image
from pixsearch.indexer.decode import DecodeOptions, prepare
from pixsearch.models.preprocess import apply_transform
from pixsearch.search import SearchService


def _detailed_jpeg(path: Path, seed: int) -> None:
    """1600x1200 with fine detail: draft mode decodes it at 1/4 scale, and that shows in the pixels."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    image = Image.fromarray(noise).resize((1600, 1200), Image.Resampling.NEAREST)
    pen = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = int(rng.integers(0, 1500)), int(rng.integers(0, 1100))
        pen.line((x, y, x + int(rng.integers(5, 100)), y + int(rng.integers(5, 100))), fill=(255, 255, 255), width=1)
    image.save(path, "JPEG", quality=92)


def test_query_image_decodes_as_indexed(encoder, library, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = [folder / f"detail_{seed:02d}.jpg" for seed in range(12)]
    for seed, path in enumerate(paths):
        _detailed_jpeg(path, seed)
    run_index(library, encoder, folder)
    service = SearchService(library, encoder=encoder)
    for path in paths:
        indexed = prepare(str(path), DecodeOptions(encoder.transform))
        query = load_query_image(path, encoder.transform)
        np.testing.assert_array_equal(apply_transform(encoder.transform, query), indexed.pixels)
        best = service.image_to_image(query, k=2)[0]
        # a full-size decode scores 1 - 1e-5 or so with the tiny test model, enough to lose the
        # first place among similar photos with a real one
        assert best.path == str(path) and best.score > 1 - 1e-6, (path, best.path, 1 - best.score)


def test_full_size_decode_is_what_differed(encoder, tmp_path: Path) -> None:
    """Why the shared decode matters: decoding the same JPEG at full size gives other pixels."""
    path = tmp_path / "detail.jpg"
    _detailed_jpeg(path, 99)
    indexed = prepare(str(path), DecodeOptions(encoder.transform)).pixels
    full = apply_transform(encoder.transform, load_image(path))
    assert not np.array_equal(full, indexed)
    assert np.array_equal(apply_transform(encoder.transform, load_query_image(path, encoder.transform)), indexed)
