"""mPLUG preprocessing: the pure image transform and image loading for the pipeline-style calls.

ModelScope's `MPlugPreprocessor` converts to RGB, resizes to image_res x image_res with PIL bicubic
(aspect ratio not kept, no crop), scales to [0, 1] and normalises with the CLIP mean and std: that
is `ImageTransform(mode='squash')`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixsearch.errors import BadImageError
from pixsearch.models.mplug.config import MplugConfig
from pixsearch.models.preprocess import CLIP_MEAN, CLIP_STD, ImageTransform, apply_transform


def image_transform(config: MplugConfig) -> ImageTransform:
    """MPlugPreprocessor's image recipe for this model's image_res."""
    return ImageTransform(size=config.image_res, mode="squash", resample="bicubic", mean=CLIP_MEAN, std=CLIP_STD)


def pixels_of(transform: ImageTransform, images: Sequence[Image.Image]) -> torch.Tensor:
    """Transform and stack PIL images to a float32 [n, 3, H, W] tensor."""
    return torch.from_numpy(np.stack([apply_transform(transform, image) for image in images]))


def open_image(source: str | Path | Image.Image) -> Image.Image:
    """A PIL image as it is, or the image file at a path, converted to RGB.

    Raises:
        BadImageError: the file cannot be read as an image.
    """
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    try:
        with Image.open(source) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise BadImageError(str(source), f"cannot be read as an image ({type(error).__name__}: {error})") from error
