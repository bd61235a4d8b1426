from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pixsearch.rerank.heatmap import heatmap_overlay, heatmap_png


def test_matching_patch_turns_red_and_the_rest_does_not() -> None:
    photo = Image.new("RGB", (200, 200), (128, 128, 128))
    grid = np.zeros((4, 4), dtype=np.float32)
    grid[0, 3] = 1.0  # top-right patch matches
    out = np.asarray(heatmap_overlay(photo, grid)).astype(int)
    top_right, bottom_left = out[20, 180], out[180, 20]
    assert top_right[0] > top_right[1] + 60  # red dominates where the words match
    assert abs(bottom_left[0] - bottom_left[1]) < 5  # grey elsewhere


def test_png_keeps_the_aspect_and_limits_the_size() -> None:
    data = heatmap_png(Image.new("RGB", (1600, 900)), np.full((2, 2), 0.5, dtype=np.float32), max_side=400)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (400, 225)


def test_grid_must_be_two_dimensional() -> None:
    with pytest.raises(ValueError, match="rows, cols"):
        heatmap_overlay(Image.new("RGB", (10, 10)), np.zeros(16, dtype=np.float32))
