"""VLE configuration: the checkpoint's config.json, read into typed sub-configs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import CLIPVisionConfig, DebertaV2Config

from pixsearch.errors import ModelLoadError


@dataclass(frozen=True)
class VleConfig:
    """The fusion sizes of a VLE model plus the configs of its two towers.

    `hidden_size` etc. describe the cross-modal co-attention layers (768 in VLE-base); the towers
    keep their own widths, bridged by the text/image projection layers.
    """

    text_config: DebertaV2Config
    vision_config: CLIPVisionConfig
    hidden_size: int = 768
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    num_token_types: int = 2
    id2label: dict[int, str] = field(default_factory=dict)
    architectures: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ModelLoadError(
                f"VLE config: hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )

    @property
    def patch_grid(self) -> int:
        """Patches per image side (image_size // patch_size)."""
        return self.vision_config.image_size // self.vision_config.patch_size

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VleConfig:
        """Build from a config.json dict as the original VLEConfig.to_dict() writes it.

        Raises:
            ModelLoadError: not a VLE config, or a tower of an unsupported type.
        """
        if raw.get("model_type") != "vle":
            raise ModelLoadError(f"config.json has model_type {raw.get('model_type')!r}, expected 'vle'")
        try:
            text_config = _text_config(dict(raw["text_config"]))
            vision_config = _vision_config(dict(raw["vision_config"]))
        except KeyError as error:
            raise ModelLoadError(f"VLE config.json lacks {error.args[0]!r}") from error
        id2label = {int(k): str(v) for k, v in (raw.get("id2label") or {}).items()}
        return cls(
            text_config=text_config,
            vision_config=vision_config,
            hidden_size=int(raw.get("hidden_size", 768)),
            num_hidden_layers=int(raw.get("num_hidden_layers", 6)),
            num_attention_heads=int(raw.get("num_attention_heads", 12)),
            intermediate_size=int(raw.get("intermediate_size", 3072)),
            hidden_act=str(raw.get("hidden_act", "gelu")),
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            num_token_types=int(raw.get("num_token_types", 2)),
            id2label=id2label,
            architectures=tuple(raw.get("architectures") or ()),
        )


def load_config(model_dir: Path) -> VleConfig:
    """Read `model_dir/config.json`.

    Raises:
        ModelLoadError: the file is missing, not JSON, or not a VLE config.
    """
    path = Path(model_dir) / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"cannot read VLE config {path}: {error}") from error
    return VleConfig.from_dict(raw)


def _text_config(raw: dict[str, Any]) -> DebertaV2Config:
    model_type = raw.pop("model_type", None)
    if model_type != "deberta-v2":
        raise ModelLoadError(f"VLE text_config has model_type {model_type!r}; only 'deberta-v2' is supported")
    return DebertaV2Config(**raw)


def _vision_config(raw: dict[str, Any]) -> CLIPVisionConfig:
    model_type = raw.pop("model_type", None)
    if model_type == "clip":
        # the original accepts a full CLIPConfig here and keeps only its vision part
        raw = dict(raw.get("vision_config") or {})
        raw.pop("model_type", None)
    elif model_type != "clip_vision_model":
        raise ModelLoadError(
            f"VLE vision_config has model_type {model_type!r}; only 'clip_vision_model' or 'clip' is supported"
        )
    return CLIPVisionConfig(**raw)
