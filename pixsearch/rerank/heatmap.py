"""Which parts of a photo match the words: a patch-score grid drawn over the photo as a PNG."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image


def heatmap_overlay(image: Image.Image, scores: npt.NDArray[np.float32], max_side: int = 512) -> Image.Image:
    """Blend a [rows, cols] grid of match probabilities (0..1) over `image`, red where they match.

    The grid covers the square center crop the model saw when the photo is not square, so it is
    laid over that crop; the rest of the photo is dimmed.

    Raises:
        ValueError: when `scores` is not a 2-D grid.
    """
    grid = np.asarray(scores, dtype=np.float32)
    if grid.ndim != 2:
        raise ValueError(f"patch scores must be a [rows, cols] grid, got shape {grid.shape}")
    photo = image.convert("RGB")
    photo.thumbnail((max_side, max_side))
    side = min(photo.size)
    left, top = (photo.width - side) // 2, (photo.height - side) // 2
    heat = Image.fromarray((np.clip(grid, 0, 1) * 255).astype(np.uint8), "L")
    heat = heat.resize((side, side), Image.Resampling.BILINEAR)
    red = Image.new("RGB", (side, side), (255, 0, 0))
    alpha = heat.point(lambda v: int(v * 0.6))
    dimmed = Image.blend(photo, Image.new("RGB", photo.size, (0, 0, 0)), 0.35)
    crop = photo.crop((left, top, left + side, top + side))
    dimmed.paste(Image.composite(red, crop, alpha), (left, top))
    return dimmed


def heatmap_png(image: Image.Image, scores: npt.NDArray[np.float32], max_side: int = 512) -> bytes:
    buffer = io.BytesIO()
    heatmap_overlay(image, scores, max_side).save(buffer, "PNG")
    return buffer.getvalue()
