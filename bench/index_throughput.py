"""Indexing throughput on large JPEGs: pixsearch's indexer against a naive loop, in one run.

Baseline: one process, full-resolution decode, fp32, batch 1. Both use the same CLIP ViT-B/32
(real config, random weights). Prints images/s for each and the ratio.

    python bench/index_throughput.py [--count 48] [--size 4000x3000]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from pathlib import Path

import numpy as np
from common import Timer, save_vit_b32_clip
from PIL import Image, ImageDraw, ImageFilter, ImageOps


def make_photo(seed: int, size: tuple[int, int], path: Path) -> None:
    """A large JPEG with photo-like detail (shapes, gradients, grain) so decoding costs what it does."""
    rng = random.Random(seed)
    small = Image.new("RGB", (size[0] // 8, size[1] // 8), tuple(rng.randrange(256) for _ in range(3)))
    pen = ImageDraw.Draw(small)
    for _ in range(40):
        x, y = rng.randrange(small.width), rng.randrange(small.height)
        r = rng.randrange(10, small.width // 4)
        pen.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    image = small.resize(size, Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(3))
    grain = np.random.default_rng(seed).integers(-12, 12, (size[1], size[0], 3), dtype=np.int16)
    pixels = np.clip(np.asarray(image, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=92)


def naive(paths: list[Path], spec: str) -> float:
    import torch

    from pixsearch.models import ModelOptions, create
    from pixsearch.models.preprocess import apply_transform

    encoder = create(spec, options=ModelOptions(dtype="float32"))
    encoder.load()
    with Timer() as timer:
        for path in paths:
            image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
            with torch.inference_mode():
                encoder.encode_pixels(apply_transform(encoder.transform, image)[None])
    return len(paths) / timer.seconds


def pixsearch_index(paths: list[Path], spec: str, library: Path) -> tuple[float, str]:
    from pixsearch.indexer import Indexer, IndexOptions
    from pixsearch.models import create
    from pixsearch.models.runtime import resolve_dtype
    from pixsearch.storage import Library

    encoder = create(spec)
    encoder.load()
    options = IndexOptions()
    report = Indexer(Library.open(library), encoder, options).run([paths[0].parent])
    assert report.embedded == len(paths), report
    return report.images_per_second, str(resolve_dtype(encoder.options)).replace("torch.", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--size", default="4000x3000")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="pixsearch-bench-"))
    photos = work / "photos"
    photos.mkdir()
    paths = [photos / f"photo_{i:04d}.jpg" for i in range(args.count)]
    for i, path in enumerate(paths):
        make_photo(i, size, path)
    spec = f"clip:{save_vit_b32_clip(work / 'vit-b32')}"
    print(f"{args.count} JPEGs of {size[0]}x{size[1]}, CLIP ViT-B/32 (random weights), {os.cpu_count()} cores")
    fast, dtype = pixsearch_index(paths, spec, work / "library")
    slow = naive(paths[: max(8, args.count // 3)], spec)
    print(f"naive (full decode, fp32, batch 1, 1 process): {slow:7.2f} images/s")
    print(f"pixsearch index (draft decode, workers, batch 32, {dtype}): {fast:7.2f} images/s")
    print(f"ratio: {fast / slow:.1f}x")


if __name__ == "__main__":
    main()
