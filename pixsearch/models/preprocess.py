"""Pure image preprocessing: PIL image in, normalised float32 [3, H, W] array out.

A transform is a frozen dataclass so it can be hashed (`transform_id`), sent to worker
processes, and shared by indexing and querying.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}

# A 10:1 panorama or a 1:30 scrolling screenshot is fine; past 100:1 the shortest-edge resize makes
# an intermediate of size x (100 * size) and more (a 372-byte 100000x1 PNG would need 15 GB).
MAX_ASPECT_RATIO = 100


@dataclass(frozen=True)
class ImageTransform:
    """How a model wants its pixels.

    mode 'shortest-crop': resize the shortest edge to `size`, keep the aspect ratio, center-crop
    size x size (CLIP). mode 'squash': resize to size x size ignoring the aspect ratio (SigLIP, mPLUG).
    """

    size: int
    mode: str = "shortest-crop"
    resample: str = "bicubic"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        if self.mode not in {"shortest-crop", "squash"}:
            raise ValueError(f"ImageTransform mode {self.mode!r} is not 'shortest-crop' or 'squash'")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"ImageTransform resample {self.resample!r} is not one of {sorted(_RESAMPLE)}")

    def __call__(self, image: Image.Image) -> npt.NDArray[np.float32]:
        return apply_transform(self, image)


def transform_id(transform: ImageTransform) -> str:
    """A short stable hash of a transform, stored next to every vector it helped make."""
    payload = json.dumps(asdict(transform), sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def shortest_edge_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after scaling the shortest edge to `size`, as transformers computes it."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def aspect_ratio_problem(width: int, height: int) -> str | None:
    """Why an image is too thin to preprocess within a bounded amount of memory, or None."""
    long, short = max(width, height), max(1, min(width, height))
    if long <= MAX_ASPECT_RATIO * short:
        return None
    ratio = f"{round(long / short)}:1" if width >= height else f"1:{round(long / short)}"
    return f"aspect ratio {ratio} too extreme ({width}x{height}; the limit is {MAX_ASPECT_RATIO}:1)"


def center_crop(image: Image.Image, size: int) -> Image.Image:
    left = (image.width - size) // 2
    top = (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def apply_transform(transform: ImageTransform, image: Image.Image) -> npt.NDArray[np.float32]:
    """Resize, crop and normalise one image to float32 [3, size, size].

    Raises:
        ValueError: the aspect ratio is past MAX_ASPECT_RATIO (its resize would not fit in memory).
    """
    problem = aspect_ratio_problem(image.width, image.height)
    if problem:
        raise ValueError(problem)
    if image.mode not in ("RGB", "L"):  # convert() would copy even an RGB image, at full size
        image = image.convert("RGB")
    resample = _RESAMPLE[transform.resample]
    if transform.mode == "squash":
        image = image.resize((transform.size, transform.size), resample)
    else:
        new_size = shortest_edge_size(image.width, image.height, transform.size)
        if new_size != image.size:
            image = image.resize(new_size, resample)
        image = center_crop(image, transform.size)
    # L is resized first and made RGB after: the very same pixels, for a third of the memory
    image = image if image.mode == "RGB" else image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = (pixels - np.asarray(transform.mean, dtype=np.float32)) / np.asarray(transform.std, dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)


def stack(arrays: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    """Stack per-image arrays into one batch, checking they agree in shape."""
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"cannot stack pixel arrays of different shapes: {sorted(shapes)}")
    return np.stack(arrays).astype(np.float32, copy=False)
