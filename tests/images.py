"""Synthetic images for tests, drawn with PIL."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "cyan", "magenta"]


def draw(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A distinct picture per seed: a background and a few filled shapes."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, rng.choice(COLOURS))
    pen = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = rng.randrange(size[0] - 8), rng.randrange(size[1] - 8)
        x1, y1 = x0 + rng.randrange(6, size[0] // 2), y0 + rng.randrange(6, size[1] // 2)
        shape = rng.choice([pen.rectangle, pen.ellipse])
        shape((x0, y0, x1, y1), fill=rng.choice(COLOURS))
    return image


def write_folder(folder: Path, count: int, start: int = 0, fmt: str = "png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(start, start + count):
        path = folder / f"img_{seed:04d}.{fmt}"
        draw(seed).save(path)
        paths.append(path)
    return paths
