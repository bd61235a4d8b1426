"""Dual encoders from transformers: CLIP, SigLIP and Chinese-CLIP.

Each loads only the towers it needs: a text-only query never reads the vision weights
(CLIP and SigLIP have separate tower classes; Chinese-CLIP loads its full model, see below).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from pixsearch.errors import ModelLoadError
from pixsearch.models import hub
from pixsearch.models.embedding import to_embedding
from pixsearch.models.preprocess import CLIP_MEAN, CLIP_STD, ImageTransform, apply_transform, stack, transform_id
from pixsearch.models.roles import Embedding, Tower
from pixsearch.models.runtime import resolve_device, resolve_dtype
from pixsearch.models.spec import ModelOptions, ModelSpec

log = logging.getLogger(__name__)

_PIL_RESAMPLE_NAMES = {2: "bilinear", 3: "bicubic"}


def transform_from_config(directory: Path, default: ImageTransform) -> ImageTransform:
    """Read a transformers preprocessor_config.json into an ImageTransform (or keep `default`)."""
    path = directory / "preprocessor_config.json"
    if not path.exists():
        return default
    config = json.loads(path.read_text())
    size = config.get("size", {})
    if isinstance(size, int):
        size = {"shortest_edge": size}
    mean = tuple(config.get("image_mean", default.mean))
    std = tuple(config.get("image_std", default.std))
    resample = _PIL_RESAMPLE_NAMES.get(config.get("resample", 3), "bicubic")
    if "shortest_edge" in size and config.get("do_center_crop", True):
        crop = config.get("crop_size", size["shortest_edge"])
        crop = crop["height"] if isinstance(crop, dict) else crop
        if crop != size["shortest_edge"]:
            log.warning("%s: crop %s differs from resize %s; cropping at the resize size", path, crop, size)
        return ImageTransform(size["shortest_edge"], "shortest-crop", resample, mean, std)  # type: ignore[arg-type]
    edge = size.get("height") or size.get("shortest_edge") or default.size
    return ImageTransform(int(edge), "squash", resample, mean, std)  # type: ignore[arg-type]


def load_tower(cls: Any, directory: Path, config: Any, spec: ModelSpec) -> Any:
    """Load one tower class from a full dual-encoder checkpoint; the other tower's weights are
    expected to be left over, but a missing weight of this tower is an error."""
    model, info = cls.from_pretrained(directory, config=config, output_loading_info=True)
    missing = sorted(info.get("missing_keys", []))
    mismatched = sorted(
        str(item[0]) if isinstance(item, tuple) else str(item) for item in info.get("mismatched_keys", [])
    )
    if missing or mismatched:
        raise ModelLoadError(
            f"model {spec}: checkpoint in {directory} does not fit {cls.__name__}: "
            f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''}, size mismatch {mismatched[:10]}"
        )
    return model


class HfDualEncoder:
    """Common machinery; subclasses say which classes make each tower and how to read their output."""

    default_transform = ImageTransform(224)
    text_padding: str | bool = True
    max_text_tokens = 77

    def __init__(self, spec: ModelSpec, options: ModelOptions) -> None:
        self.spec = spec
        self.options = options
        self._dir: Path | None = None
        self._transform: ImageTransform | None = None
        self._text: Any = None
        self._vision: Any = None
        self._tokenizer: Any = None
        self._dim: int | None = None

    # -- loading -------------------------------------------------------------------------
    def _directory(self) -> Path:
        if self._dir is None:
            self._dir = hub.resolve_source(self.spec, required=("config.json",))
        return self._dir

    def load(self) -> None:
        self.load_towers(Tower.BOTH)

    def load_towers(self, tower: Tower) -> None:
        directory = self._directory()
        dtype, device = resolve_dtype(self.options, on_gpu=torch.float16), resolve_device(self.options)
        try:
            if tower in (Tower.TEXT, Tower.BOTH) and self._text is None:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(directory)
                self._text = self._load_text(directory).to(device=device, dtype=dtype).eval()
            if tower in (Tower.IMAGE, Tower.BOTH) and self._vision is None:
                self._vision = self._load_vision(directory).to(device=device, dtype=dtype).eval()
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(f"model {self.spec}: cannot load from {directory}: {error}") from error

    def close(self) -> None:
        self._text = self._vision = self._tokenizer = None

    def _load_text(self, directory: Path) -> Any:
        raise NotImplementedError

    def _load_vision(self, directory: Path) -> Any:
        raise NotImplementedError

    def _text_vectors(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _image_vectors(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- the DualEncoder role -------------------------------------------------------------
    @property
    def transform(self) -> ImageTransform:
        if self._transform is None:
            self._transform = transform_from_config(self._directory(), self.default_transform)
        return self._transform

    @property
    def preprocess_id(self) -> str:
        return transform_id(self.transform)

    @property
    def dim(self) -> int:
        if self._dim is None:
            config = json.loads((self._directory() / "config.json").read_text())
            self._dim = int(config.get("projection_dim") or self._dim_from_config(config))
        return self._dim

    def _dim_from_config(self, config: dict[str, Any]) -> int:
        return int(config.get("text_config", {}).get("hidden_size", 0))

    def encode_pixels(self, pixels: npt.NDArray[np.float32]) -> Embedding:
        self.load_towers(Tower.IMAGE)
        param = next(self._vision.parameters())
        batch = torch.from_numpy(np.ascontiguousarray(pixels)).to(device=param.device, dtype=param.dtype)
        with torch.inference_mode():
            vectors = self._image_vectors(batch)
        return to_embedding(vectors, source=f"{self.spec} image tower")

    def encode_images(self, images: Sequence[Image.Image]) -> Embedding:
        return self.encode_pixels(stack([apply_transform(self.transform, image) for image in images]))

    def encode_texts(self, texts: Sequence[str]) -> Embedding:
        self.load_towers(Tower.TEXT)
        inputs = self._tokenizer(
            list(texts),
            padding=self.text_padding,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        device = next(self._text.parameters()).device
        inputs = {key: value.to(device) for key, value in inputs.items()}
        with torch.inference_mode():
            vectors = self._text_vectors(inputs)
        return to_embedding(vectors, source=f"{self.spec} text tower")


class ClipEncoder(HfDualEncoder):
    """`clip:` — OpenAI CLIP and compatible checkpoints (CLIPModel layout)."""

    def _load_text(self, directory: Path) -> Any:
        from transformers import CLIPConfig, CLIPTextModelWithProjection

        config = CLIPConfig.from_pretrained(directory)
        config.text_config.projection_dim = config.projection_dim
        return load_tower(CLIPTextModelWithProjection, directory, config.text_config, self.spec)

    def _load_vision(self, directory: Path) -> Any:
        from transformers import CLIPConfig, CLIPVisionModelWithProjection

        config = CLIPConfig.from_pretrained(directory)
        config.vision_config.projection_dim = config.projection_dim
        return load_tower(CLIPVisionModelWithProjection, directory, config.vision_config, self.spec)

    def _text_vectors(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._text(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).text_embeds

    def _image_vectors(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._vision(pixel_values=pixels).image_embeds

    @property
    def logit_scale(self) -> float:
        """The learned inverse temperature: cosine similarity times this is the model's logit."""
        from safetensors import SafetensorError, safe_open

        weights = self._directory() / "model.safetensors"
        try:
            with safe_open(str(weights), framework="pt") as file:
                return float(file.get_tensor("logit_scale").float().exp())
        except (OSError, KeyError, SafetensorError) as error:
            raise ModelLoadError(f"model {self.spec}: no logit_scale in {weights} ({error})") from error


class SiglipEncoder(HfDualEncoder):
    """`siglip:` — SigLIP; texts are padded to the fixed length the model was trained with."""

    default_transform = ImageTransform(224, "squash", "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    text_padding = "max_length"
    max_text_tokens = 64

    def _load_text(self, directory: Path) -> Any:
        from transformers import SiglipConfig, SiglipTextModel

        config = SiglipConfig.from_pretrained(directory)
        return load_tower(SiglipTextModel, directory, config.text_config, self.spec)

    def _load_vision(self, directory: Path) -> Any:
        from transformers import SiglipConfig, SiglipVisionModel

        config = SiglipConfig.from_pretrained(directory)
        return load_tower(SiglipVisionModel, directory, config.vision_config, self.spec)

    def _text_vectors(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._text(input_ids=inputs["input_ids"]).pooler_output

    def _image_vectors(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._vision(pixel_values=pixels).pooler_output


class ChineseClipEncoder(HfDualEncoder):
    """`chinese-clip:` — Chinese-CLIP. Its projections live on the joint model, so both towers
    are read from the checkpoint even for a text query; the unused tower is then dropped."""

    default_transform = ImageTransform(224, "squash", "bicubic", CLIP_MEAN, CLIP_STD)
    max_text_tokens = 52

    def _joint(self, directory: Path) -> Any:
        from transformers import ChineseCLIPConfig, ChineseCLIPModel

        return load_tower(ChineseCLIPModel, directory, ChineseCLIPConfig.from_pretrained(directory), self.spec)

    def _load_text(self, directory: Path) -> Any:
        joint = self._joint(directory)
        return torch.nn.ModuleDict({"model": joint.text_model, "projection": joint.text_projection})

    def _load_vision(self, directory: Path) -> Any:
        joint = self._joint(directory)
        return torch.nn.ModuleDict({"model": joint.vision_model, "projection": joint.visual_projection})

    def _text_vectors(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self._text["model"](**inputs)
        return self._text["projection"](out.last_hidden_state[:, 0, :])

    def _image_vectors(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self._vision["model"](pixel_values=pixels)
        return self._vision["projection"](out.pooler_output)
