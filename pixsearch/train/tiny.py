"""Tiny models built from configs, for training from scratch (the synthetic world, the offline demo).

Each is saved like a published checkpoint, so `clip:DIR` / `blip-itm:DIR` ... load it: the full
model's `save_pretrained`, the tokenizer files and `preprocessor_config.json`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pixsearch.errors import ConfigError
from pixsearch.models.preprocess import CLIP_MEAN, CLIP_STD
from pixsearch.train.tokenizer import save_tokenizer

BLIP_CLASSES = {
    "blip-itm": "BlipForImageTextRetrieval",
    "blip-caption": "BlipForConditionalGeneration",
    "blip-vqa": "BlipForQuestionAnswering",
}
TINY_BACKENDS = ("clip", *BLIP_CLASSES)


@dataclass(frozen=True)
class TinyConfig:
    image_size: int = 32
    patch_size: int = 4
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    projection_dim: int = 64

    def check(self) -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(f"image size {self.image_size} is not a multiple of patch size {self.patch_size}")
        if self.hidden % self.heads:
            raise ConfigError(f"hidden size {self.hidden} is not a multiple of {self.heads} heads")


# A tiny reranker that learns attribute binding on the synthetic world within minutes on 2 cores:
# whole shapes fit in 8-pixel patches, and at width 64 the binding was learned late or not at all.
TINY_RERANKER = TinyConfig(patch_size=8, hidden=128)


def build_tiny(
    directory: Path, backend: str, words: Iterable[str], config: TinyConfig | None = None, seed: int = 0
) -> Path:
    """Build a randomly initialised model of `backend` ('clip', 'blip-itm', 'blip-caption', 'blip-vqa')
    with a word-level tokenizer over `words`, and save it to `directory`.

    Raises:
        ConfigError: an unknown backend or an inconsistent config.
    """
    config = config or TinyConfig()
    config.check()
    directory = Path(directory)
    torch.manual_seed(seed)
    tokenizer = save_tokenizer(directory, words)
    if backend == "clip":
        _clip(directory, tokenizer, config)
    elif backend in BLIP_CLASSES:
        _blip(directory, backend, tokenizer, config)
    else:
        raise ConfigError(f"no tiny model for backend {backend!r}; tiny models exist for {', '.join(TINY_BACKENDS)}")
    return directory


def _clip(directory: Path, tokenizer, config: TinyConfig) -> None:
    from transformers import CLIPConfig, CLIPModel

    clip_config = CLIPConfig(
        text_config=dict(
            _tower(config),
            vocab_size=len(tokenizer),
            max_position_embeddings=77,  # the clip: backend truncates texts at 77 tokens
            # CLIP pools the text at its first eos token: [SEP] here, which ends every text
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(_tower(config), image_size=config.image_size, patch_size=config.patch_size),
        projection_dim=config.projection_dim,
    )
    CLIPModel(clip_config).save_pretrained(directory)
    _write_json(directory / "preprocessor_config.json", clip_image_processor(config.image_size))


def clip_image_processor(size: int) -> dict[str, Any]:
    """preprocessor_config.json of a CLIPImageProcessor: shortest edge to `size`, centre crop, CLIP's mean/std."""
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": size},
        "do_center_crop": True,
        "crop_size": {"height": size, "width": size},
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
    }


def _tower(config: TinyConfig) -> dict[str, int]:
    """The transformer sizes every tower of a tiny model shares."""
    return dict(
        hidden_size=config.hidden,
        intermediate_size=4 * config.hidden,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
    )


def blip_config(tokenizer, config: TinyConfig):
    """A BlipConfig of the tiny size with the tokenizer's special token ids."""
    from transformers import BlipConfig

    text = dict(
        _tower(config),
        vocab_size=len(tokenizer),
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        sep_token_id=tokenizer.sep_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    vision = dict(
        _tower(config),
        image_size=config.image_size,
        patch_size=config.patch_size,
        # BLIP's default is 1e-10 (meant for loading pretrained weights): from scratch, every image
        # would then give the same vision output and nothing could be learned
        initializer_range=0.02,
    )
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=config.projection_dim)


def _blip(directory: Path, backend: str, tokenizer, config: TinyConfig) -> None:
    import transformers

    model = getattr(transformers, BLIP_CLASSES[backend])(blip_config(tokenizer, config))
    model.save_pretrained(directory)
    _write_json(
        directory / "preprocessor_config.json",
        {
            "image_processor_type": "BlipImageProcessor",
            "do_resize": True,
            "size": {"height": config.image_size, "width": config.image_size},
            "resample": 3,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(CLIP_MEAN),
            "image_std": list(CLIP_STD),
            "do_convert_rgb": True,
        },
    )


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
