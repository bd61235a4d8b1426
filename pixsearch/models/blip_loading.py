"""Loading for the BLIP backends: checked weights, tokenizer, pixel transform, SDPA vision attention.

Kept apart from `blip.py` so the three backends there read as what they compute.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pixsearch.errors import ModelLoadError, ModelNotFoundError
from pixsearch.models.hub import how_to_supply, resolve_source
from pixsearch.models.preprocess import CLIP_MEAN, CLIP_STD, ImageTransform
from pixsearch.models.runtime import resolve_device, resolve_dtype
from pixsearch.models.spec import ModelOptions, ModelSpec

log = logging.getLogger(__name__)

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_RESAMPLE_NAMES = {2: "bilinear", 3: "bicubic"}  # PIL.Image.Resampling values used in preprocessor configs


@dataclass
class LoadedBlip:
    """What `load_blip` hands back: the model (eval mode, on its device), tokenizer and pixel transform."""

    model: Any
    tokenizer: Any
    transform: ImageTransform
    device: torch.device
    dtype: torch.dtype


class SdpaVisionAttention(nn.Module):
    """BLIP's vision self-attention computed by `scaled_dot_product_attention`.

    transformers 5.23 has no SDPA path for BLIP (`attn_implementation="sdpa"` raises ValueError) and
    its `BlipAttention` materialises the [heads, 577, 577] score matrix in eager matmul + softmax.
    This module reuses the very same `qkv` and `projection` layers (so the state dict is unchanged)
    and fuses the rest; outputs agree with the eager path to float rounding.
    """

    def __init__(self, eager: nn.Module) -> None:
        super().__init__()
        self.qkv = eager.qkv
        self.projection = eager.projection
        self.num_heads = eager.num_heads
        self.scale = eager.scale

    def forward(self, hidden_states: torch.Tensor, **_: Any) -> tuple[torch.Tensor, None]:
        batch, tokens, width = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        context = F.scaled_dot_product_attention(query, key, value, scale=self.scale)
        # the encoder layer unpacks (output, attention weights); SDPA never forms the weights
        return self.projection(context.transpose(1, 2).reshape(batch, tokens, width)), None


class SdpaTextAttention(nn.Module):
    """BLIP's text self- or cross-attention computed by `scaled_dot_product_attention`, without a KV cache.

    For the text *encoders* only (ITM scoring, the VQA question encoder): they run once per input and
    never cache. The eager path copies the strided [batch, heads, 577, 64] image keys and values of
    every cross-attention layer before its matmuls; SDPA reads them in place. Same `query`, `key`,
    `value` layers, so the state dict is unchanged.
    """

    def __init__(self, eager: nn.Module) -> None:
        super().__init__()
        self.query, self.key, self.value = eager.query, eager.key, eager.value
        self.num_heads = eager.num_attention_heads
        self.head_size = eager.attention_head_size

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        past_key_values: Any = None,
        **_: Any,
    ) -> tuple[torch.Tensor, None]:
        if past_key_values is not None:
            raise RuntimeError("SdpaTextAttention serves text encoders, which never cache keys and values")
        source = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, length, _ = hidden_states.shape
        query = self.query(hidden_states).view(batch, length, self.num_heads, self.head_size).transpose(1, 2)
        key = self.key(source).view(batch, source.shape[1], self.num_heads, self.head_size).transpose(1, 2)
        value = self.value(source).view(batch, source.shape[1], self.num_heads, self.head_size).transpose(1, 2)
        # attention_mask is the additive float mask BlipTextModel builds (or None when nothing is masked)
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, scale=self.head_size**-0.5
        )
        return context.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_size), None


def use_sdpa_text_encoder(text_encoder: nn.Module) -> int:
    """Swap the self- and cross-attention of a text encoder (never a cached decoder); returns how many."""
    swapped = 0
    for layer in text_encoder.encoder.layer:
        for block in (layer.attention, getattr(layer, "crossattention", None)):
            if block is not None and not isinstance(block.self, SdpaTextAttention):
                block.self = SdpaTextAttention(block.self)
                swapped += 1
    return swapped


def use_sdpa_vision_attention(vision_model: nn.Module) -> int:
    """Swap every vision encoder layer's attention for `SdpaVisionAttention`; returns how many were swapped."""
    swapped = 0
    for layer in vision_model.encoder.layers:
        if not isinstance(layer.self_attn, SdpaVisionAttention):
            layer.self_attn = SdpaVisionAttention(layer.self_attn)
            swapped += 1
    return swapped


def transform_from_directory(directory: Path, image_size: int, spec: ModelSpec) -> ImageTransform:
    """The pixel transform of `preprocessor_config.json`, as `BlipImageProcessor` applies it.

    BLIP resizes straight to height x width (no aspect ratio, no crop), rescales by 1/255 and
    normalises; that is `ImageTransform(mode="squash")`. Without the file the BLIP defaults are used
    at the vision tower's `image_size`.

    Raises:
        ModelLoadError: a setting this transform cannot reproduce, or a size the vision tower does not take.
    """
    path = directory / "preprocessor_config.json"
    if not path.exists():
        log.info("model %s: no preprocessor_config.json; using BLIP defaults at %d px", spec, image_size)
        return ImageTransform(size=image_size, mode="squash", resample="bicubic", mean=CLIP_MEAN, std=CLIP_STD)
    config = json.loads(path.read_text())

    def unsupported(what: str) -> ModelLoadError:
        return ModelLoadError(f"model {spec}: {path} has {what}, which pixsearch's BLIP preprocessing does not support")

    size = config.get("size", image_size)
    if isinstance(size, dict):
        height, width = size.get("height"), size.get("width")
        if height is None or height != width:
            raise unsupported(f"size {size}")
        size = height
    if not config.get("do_resize", True):
        raise unsupported("do_resize false")
    if not config.get("do_rescale", True) or not math.isclose(config.get("rescale_factor", 1 / 255), 1 / 255):
        raise unsupported(f"do_rescale {config.get('do_rescale')} / rescale_factor {config.get('rescale_factor')}")
    resample = _RESAMPLE_NAMES.get(config.get("resample", 3))
    if resample is None:
        raise unsupported(f"resample {config.get('resample')}")
    if config.get("do_normalize", True):
        mean, std = tuple(config.get("image_mean", CLIP_MEAN)), tuple(config.get("image_std", CLIP_STD))
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if int(size) != image_size:
        raise ModelLoadError(
            f"model {spec}: preprocessor size {size} differs from the vision tower's image_size {image_size}"
        )
    return ImageTransform(size=int(size), mode="squash", resample=resample, mean=mean, std=std)


def load_blip(model_class: type, spec: ModelSpec, options: ModelOptions) -> LoadedBlip:
    """Load a BLIP checkpoint of `model_class` from the spec's directory, checking every weight is used.

    Raises:
        ModelNotFoundError: no directory, no config.json or no weights file.
        ModelLoadError: not a BLIP config, missing / unexpected / mismatched weights (listed by name),
            a tokenizer that does not fit, or an unsupported preprocessor config.
    """
    directory = resolve_source(spec, required=("config.json",))
    if not any((directory / name).exists() for name in WEIGHT_FILES):
        raise ModelNotFoundError(
            f"model {spec}: {directory} has no weights ({' or '.join(WEIGHT_FILES)}); {how_to_supply(spec)}"
        )
    model_type = json.loads((directory / "config.json").read_text()).get("model_type")
    if model_type != "blip":
        raise ModelLoadError(f"model {spec}: config.json has model_type {model_type!r}, not 'blip'")
    dtype, device = resolve_dtype(options), resolve_device(options)
    try:
        model, info = model_class.from_pretrained(
            directory, dtype=dtype, attn_implementation="eager", output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelLoadError(f"model {spec}: {model_class.__name__} could not load {directory}: {error}") from error
    _check_loading_info(spec, model_class.__name__, info)
    model.eval().to(device)
    use_sdpa_vision_attention(model.vision_model)
    if hasattr(model, "text_encoder"):  # ITM and VQA; decoders keep the eager path and its KV cache
        use_sdpa_text_encoder(model.text_encoder)
    tokenizer = _load_tokenizer(directory, spec, model.config.text_config.vocab_size)
    transform = transform_from_directory(directory, model.config.vision_config.image_size, spec)
    log.info("loaded %s as %s (%s, %s)", spec, model_class.__name__, dtype, device)
    return LoadedBlip(model=model, tokenizer=tokenizer, transform=transform, device=device, dtype=dtype)


def _check_loading_info(spec: ModelSpec, class_name: str, info: dict[str, Any]) -> None:
    # position_ids are non-persistent buffers rebuilt by __init__ as arange(max_positions); checkpoints
    # converted with transformers 4.x may still carry them, and ignoring them changes nothing.
    unexpected = sorted(k for k in info.get("unexpected_keys", ()) if not k.endswith(".position_ids"))
    missing = sorted(info.get("missing_keys", ()))
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
    if missing or unexpected or mismatched:
        parts = [
            f"{label} ({len(keys)}): {', '.join(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched))
            if keys
        ]
        raise ModelLoadError(f"model {spec}: weights do not fit {class_name}; " + "; ".join(parts))


def _load_tokenizer(directory: Path, spec: ModelSpec, vocab_size: int) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"model {spec}: no usable tokenizer in {directory}: {error}") from error
    if len(tokenizer) > vocab_size:
        raise ModelLoadError(
            f"model {spec}: tokenizer has {len(tokenizer)} tokens but the text model's vocab_size is {vocab_size}"
        )
    return tokenizer
