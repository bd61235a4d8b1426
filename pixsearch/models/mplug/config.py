"""mPLUG configuration, read from a ModelScope model directory.

A ModelScope mPLUG directory holds `configuration.json` (the task), `config.yaml` (vision tower,
image size, decoding settings) and `config_bert.json` (a BertConfig plus `text_encoder_layers`,
`fusion_layers`, `text_decode_layers`, `stride_layer`, `encoder_width`). Defaults for keys a file
leaves out are the ones ModelScope's `MPlugConfig` and transformers' `BertConfig` use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pixsearch.errors import ConfigError, ModelLoadError

RETRIEVAL = "image-text-retrieval"
VQA = "visual-question-answering"
CAPTION = "image-captioning"
TASKS = (RETRIEVAL, VQA, CAPTION)

REQUIRED_FILES = ("config.yaml", "vocab.txt", "pytorch_model.bin")


@dataclass(frozen=True)
class BertSettings:
    """The BERT widths shared by the text encoder, the fusion layers and the decoder."""

    vocab_size: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str
    layer_norm_eps: float
    max_position_embeddings: int
    type_vocab_size: int
    pad_token_id: int
    encoder_width: int
    num_hidden_layers: int  # the fusion model builds this many layers
    text_encoder_layers: int
    fusion_layers: int
    text_decode_layers: int
    stride_layer: int

    @property
    def fusion_start(self) -> int:
        """Index of the first fusion layer that runs; ModelScope builds but never runs the earlier ones."""
        return max(0, self.num_hidden_layers - self.fusion_layers)


@dataclass(frozen=True)
class MplugConfig:
    """Everything the native implementation needs from a model directory."""

    task: str
    image_res: int
    clip_name: str
    vision_width: int  # input width of visn_fc (config.yaml `vision_width`)
    clip_vision_width: int
    clip_vision_layers: int
    clip_vision_patch_size: int
    embed_dim: int
    beam_size: int
    min_length: int
    max_length: int
    bert: BertSettings

    @property
    def vision_heads(self) -> int:
        return self.clip_vision_width // 64

    @property
    def position_rows(self) -> int:
        """Rows of the vision position embedding: ModelScope sizes it from the patch of `clip_name`."""
        patch = 16 if "ViT-B-16" in self.clip_name else 14
        return int(self.image_res * self.image_res / (patch * patch)) + 1

    @property
    def has_visn_fc(self) -> bool:
        """ModelScope adds visn_fc + visn_layer_norm only when the text width differs from the vision width."""
        return self.bert.hidden_size != self.vision_width


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ModelLoadError(f"cannot read mPLUG config {path}: {error}") from error
    if not isinstance(data, dict):
        raise ModelLoadError(f"mPLUG config {path} is not a mapping")
    return data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read {path}: {error}") from error
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return data


def _bert_settings(data: dict[str, Any]) -> BertSettings:
    layers = int(data.get("num_hidden_layers", 12))
    hidden = int(data.get("hidden_size", 768))
    if data.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(f"mPLUG: position_embedding_type {data['position_embedding_type']!r} is not supported")
    return BertSettings(
        vocab_size=int(data.get("vocab_size", 30522)),
        hidden_size=hidden,
        num_attention_heads=int(data.get("num_attention_heads", 12)),
        intermediate_size=int(data.get("intermediate_size", 3072)),
        hidden_act=str(data.get("hidden_act", "gelu")),
        layer_norm_eps=float(data.get("layer_norm_eps", 1e-12)),
        max_position_embeddings=int(data.get("max_position_embeddings", 512)),
        type_vocab_size=int(data.get("type_vocab_size", 2)),
        pad_token_id=int(data.get("pad_token_id", 0)),
        encoder_width=int(data.get("encoder_width", hidden)),
        num_hidden_layers=layers,
        text_encoder_layers=int(data.get("text_encoder_layers", layers)),
        fusion_layers=int(data.get("fusion_layers", layers)),
        text_decode_layers=int(data.get("text_decode_layers", layers)),
        # ModelScope's getattr default: 100 means "no concatenated self-attention layers"
        stride_layer=int(data.get("stride_layer", 100)),
    )


def read_task(model_dir: Path) -> str | None:
    """The task named in `configuration.json`, else in `config.yaml`, else None."""
    configuration = model_dir / "configuration.json"
    if configuration.is_file():
        task = _read_json(configuration).get("task")
        if task:
            return str(task)
    config_yaml = model_dir / "config.yaml"
    if config_yaml.is_file():
        task = _read_yaml(config_yaml).get("task")
        if task:
            return str(task)
    return None


def read_config(model_dir: Path, task: str | None = None) -> MplugConfig:
    """Read `config.yaml` and the BERT json it names.

    Args:
        model_dir: a ModelScope mPLUG directory.
        task: overrides the task the directory names.

    Raises:
        ModelLoadError: a file is missing or unreadable.
        ConfigError: the task is not one of TASKS, or the vision tower is a ResNet (not supported).
    """
    data = _read_yaml(model_dir / "config.yaml")
    task = task or read_task(model_dir) or VQA
    if task not in TASKS:
        raise ConfigError(f"mPLUG task {task!r} is not one of {', '.join(TASKS)}")
    vision_layers = data.get("clip_vision_layers", 24)
    if isinstance(vision_layers, (list, tuple)):
        raise ConfigError("mPLUG with a ResNet vision tower (clip_vision_layers is a list) is not supported")
    bert_path = model_dir / str(data.get("bert_config", "config_bert.json"))
    return MplugConfig(
        task=task,
        image_res=int(data.get("image_res", 504)),
        clip_name=str(data.get("clip_name", "ViT-L-14")),
        vision_width=int(data.get("vision_width", 1024)),
        clip_vision_width=int(data.get("clip_vision_width", 1024)),
        clip_vision_layers=int(vision_layers),
        clip_vision_patch_size=int(data.get("clip_vision_patch_size", 14)),
        embed_dim=int(data.get("embed_dim", 256)),
        beam_size=int(data.get("beam_size", 5)),
        min_length=int(data.get("min_length", 1)),
        max_length=int(data.get("max_length", 10)),
        bert=_bert_settings(_read_json(bert_path)),
    )
