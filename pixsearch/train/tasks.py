"""What is trained: contrastive dual encoders (CLIP, SigLIP), the BLIP ITM reranker with hard
negatives, the BLIP captioner and the BLIP VQA model. Each saves in its backend's own format."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from pixsearch.errors import ConfigError, ModelLoadError
from pixsearch.models.blip_loading import transform_from_directory
from pixsearch.models.hf_dual import ClipEncoder, SiglipEncoder, transform_from_config
from pixsearch.models.hub import resolve_source
from pixsearch.models.preprocess import ImageTransform
from pixsearch.models.spec import ModelSpec
from pixsearch.train.data import TrainData

log = logging.getLogger(__name__)

TRAINABLE = ("clip", "siglip", "blip-itm", "blip-caption", "blip-vqa")
_CLASSES = {
    "clip": "CLIPModel",
    "siglip": "SiglipModel",
    "blip-itm": "BlipForImageTextRetrieval",
    "blip-caption": "BlipForConditionalGeneration",
    "blip-vqa": "BlipForQuestionAnswering",
}
ITC_TEMPERATURE = 0.07


def model_directory(spec: ModelSpec) -> Path:
    """The local folder of the checkpoint a training run starts from."""
    if spec.backend not in TRAINABLE:
        raise ConfigError(f"pixsearch cannot train {spec.backend!r} models; it trains {', '.join(TRAINABLE)}")
    return resolve_source(spec, required=("config.json",))


def image_transform(spec: ModelSpec, directory: Path) -> ImageTransform:
    """The pixel transform the backend applies when it serves this checkpoint (training uses the same)."""
    if spec.backend == "clip":
        return transform_from_config(directory, ClipEncoder.default_transform)
    if spec.backend == "siglip":
        return transform_from_config(directory, SiglipEncoder.default_transform)
    import json

    size = json.loads((directory / "config.json").read_text())["vision_config"]["image_size"]
    return transform_from_directory(directory, int(size), spec)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The items of one step: epochs are seeded permutations, cut into full batches."""
    per_epoch = max(1, n // batch_size)
    epoch, within = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[within * batch_size : (within + 1) * batch_size]


def ranking_loss(itm_logits: torch.Tensor, images: int, ranked: int) -> torch.Tensor:
    """Cross-entropy of each true caption (first of its group) against its `ranked` false edits over
    the ITM match margins; `itm_logits` [images * (ranked + 1), 2] in the order `data.ranking_texts` gives."""
    margins = (itm_logits[:, 1] - itm_logits[:, 0]).view(images, ranked + 1)
    return F.cross_entropy(margins, torch.zeros(images, dtype=torch.long))


class _Task:
    """Loading from a checkpoint folder, per-step randomness, and saving like the original."""

    def __init__(self, spec: ModelSpec, data: TrainData, batch_size: int, seed: int) -> None:
        import transformers
        from transformers import AutoTokenizer

        self.backend = spec.backend
        self.directory = model_directory(spec)
        self.data = data
        self.batch_size = min(batch_size, len(data))
        self.items_per_step = self.batch_size
        self.seed = seed
        if self.batch_size < 2 and spec.backend in ("clip", "siglip", "blip-itm"):
            raise ConfigError(f"contrastive training needs at least 2 images, got {len(data)}")
        cls = getattr(transformers, _CLASSES[spec.backend])
        self.model, info = cls.from_pretrained(self.directory, output_loading_info=True)
        missing = sorted(info.get("missing_keys", ()))
        if missing:
            raise ModelLoadError(
                f"{spec}: {self.directory} lacks weights {cls.__name__} needs: {', '.join(missing[:20])}"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(self.directory)
        self.pixels = torch.from_numpy(data.pixels)

    def rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, step, 1])

    def indices(self, step: int) -> np.ndarray:
        return batch_indices(len(self.data), self.batch_size, self.seed, step)

    def tokens(self, texts: list[str], **kwargs: Any) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt", **kwargs))

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        source = self.directory / "preprocessor_config.json"
        if source.exists() and source.resolve() != (directory / source.name).resolve():
            shutil.copyfile(source, directory / source.name)

    def save_checkpoint(self, directory: Path) -> None:
        self.save(directory)  # saved in float32: the checkpoint holds the exact weights

    def restore(self, directory: Path) -> None:
        self.model.load_state_dict(type(self.model).from_pretrained(directory).state_dict())


class ContrastiveTask(_Task):
    """CLIP (softmax over in-batch negatives) or SigLIP (pairwise sigmoid); one caption per image per step,
    so no two rows of a batch share an image."""

    def loss(self, step: int) -> torch.Tensor:
        rng, rows = self.rng(step), self.indices(step)
        texts = [self.data.captions[i][rng.integers(len(self.data.captions[i]))] for i in rows]
        if self.backend == "siglip":  # SigLIP was trained on texts padded to a fixed length
            tokens = dict(
                self.tokenizer(texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt")
            )
            tokens.pop("attention_mask", None)
        else:
            tokens = self.tokens(texts, max_length=77)
        tokens.pop("token_type_ids", None)
        out = self.model(**tokens, pixel_values=self.pixels[rows], return_loss=True)
        return out.loss
