"""Reading a VLE checkpoint and loading it strictly: every missing or unexpected key is named."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pixsearch.errors import ModelLoadError, ModelNotFoundError
from pixsearch.models.vle.config import VleConfig, load_config
from pixsearch.models.vle.heads import HEAD_MODELS, KNOWN_HEAD_PREFIXES, Head

log = logging.getLogger(__name__)

BACKBONE_PREFIX = "vle."
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")

# Older transformers saved these index buffers; transformers 5 keeps them non-persistent and
# rebuilds them from the config (arange), so they are dropped from the checkpoint.
POSITION_ID_BUFFERS = (
    "vision_model.vision_model.embeddings.position_ids",
    "text_model.embeddings.position_ids",
)
_LISTED = 20  # names spelled out in an error message before "... and N more"


@dataclass
class LoadReport:
    """What `load_vle` left out of the checkpoint, by key name."""

    dropped_buffers: list[str] = field(default_factory=list)
    ignored_head_keys: list[str] = field(default_factory=list)


def find_weight_files(model_dir: Path) -> list[Path]:
    """The checkpoint file(s) in `model_dir`: a single file, or the shards an index names.

    Raises:
        ModelNotFoundError: no weights file in the directory.
        ModelLoadError: an index file that cannot be read.
    """
    for name in INDEX_FILES:
        index = model_dir / name
        if index.exists():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, json.JSONDecodeError, KeyError) as error:
                raise ModelLoadError(f"cannot read checkpoint index {index}: {error}") from error
            return [model_dir / shard for shard in shards]
    for name in WEIGHT_FILES:
        if (model_dir / name).exists():
            return [model_dir / name]
    raise ModelNotFoundError(f"{model_dir} holds no VLE weights (looked for {', '.join(WEIGHT_FILES + INDEX_FILES)})")


def _torch_load(path: Path) -> object:
    try:
        # memory-mapped, so a multi-GB checkpoint is not copied once more on load
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        # pre-zip (legacy) torch.save files cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint in `model_dir`, on CPU.

    Raises:
        ModelNotFoundError: no weights file.
        ModelLoadError: a file that is not a readable checkpoint.
    """
    state: dict[str, torch.Tensor] = {}
    for path in find_weight_files(model_dir):
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                part = load_file(str(path), device="cpu")
            else:
                part = _torch_load(path)
        except Exception as error:  # noqa: BLE001 - torch and safetensors raise many types for a bad file
            raise ModelLoadError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from error
        if not isinstance(part, dict):
            raise ModelLoadError(f"checkpoint {path} holds a {type(part).__name__}, not a state dict")
        state.update(part)
    return state


def _names(keys: list[str]) -> str:
    shown = ", ".join(sorted(keys)[:_LISTED])
    return shown + (f" ... and {len(keys) - _LISTED} more" if len(keys) > _LISTED else "")


def _is_other_head(key: str) -> bool:
    return key.split(".", 1)[0] in KNOWN_HEAD_PREFIXES


def align_keys(
    state: dict[str, torch.Tensor], head: Head, head_name: str
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Map checkpoint keys onto the model's names, dropping rebuilt buffers and other tasks' heads.

    A head model wants the backbone under `vle.`; the bare backbone wants it unprefixed. Either kind
    of checkpoint is accepted for either, as transformers' `base_model_prefix` handling does.
    """
    report = LoadReport()
    prefixed = any(key.startswith(BACKBONE_PREFIX) for key in state)
    aligned: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if prefixed:
            backbone_key = key[len(BACKBONE_PREFIX) :] if key.startswith(BACKBONE_PREFIX) else None
        else:
            backbone_key = None if _is_other_head(key) else key
        if backbone_key is None:  # a head's key in a head checkpoint
            if head is not Head.BASE and key.split(".", 1)[0] == head_name:
                aligned[key] = tensor
            elif _is_other_head(key):
                report.ignored_head_keys.append(key)
            else:
                aligned[key] = tensor  # unexpected: reported by name below
            continue
        if backbone_key in POSITION_ID_BUFFERS:
            report.dropped_buffers.append(key)
            continue
        aligned[backbone_key if head is Head.BASE else BACKBONE_PREFIX + backbone_key] = tensor
    return aligned, report


def _rebuild_position_ids(model: nn.Module, device: torch.device) -> None:
    """Recreate the non-persistent `position_ids` buffers a meta-device build left empty."""
    for module in model.modules():
        buffer = getattr(module, "position_ids", None)
        if isinstance(buffer, torch.Tensor) and buffer.is_meta:
            length = buffer.shape[-1]
            module.register_buffer(
                "position_ids", torch.arange(length, device=device).expand((1, -1)), persistent=False
            )


def build_model(config: VleConfig, head: Head, state: dict[str, torch.Tensor]) -> tuple[nn.Module, LoadReport]:
    """Build the model for `head` without initialising it and load `state` into it strictly.

    Raises:
        ModelLoadError: missing, unexpected or mis-shaped keys, each named.
    """
    model_cls = HEAD_MODELS[head]
    with torch.device("meta"):
        model = model_cls(config)
    aligned, report = align_keys(state, head, getattr(model_cls, "head_name", ""))
    expected = set(model.state_dict().keys())
    missing = sorted(expected - aligned.keys())
    unexpected = sorted(aligned.keys() - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_names(unexpected)}")
        raise ModelLoadError(f"VLE checkpoint does not fit a {model_cls.__name__}: " + "; ".join(parts))
    try:
        model.load_state_dict(aligned, strict=True, assign=True)
    except RuntimeError as error:  # shape mismatches, with torch's per-key messages
        raise ModelLoadError(f"VLE checkpoint does not fit a {model_cls.__name__}: {error}") from error
    _rebuild_position_ids(model, torch.device("cpu"))
    still_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        raise ModelLoadError(f"VLE model has tensors the checkpoint did not provide: {_names(still_meta)}")
    if report.dropped_buffers:
        log.debug("dropped rebuilt buffers: %s", ", ".join(report.dropped_buffers))
    if report.ignored_head_keys:
        log.info(
            "ignored %d key(s) of other VLE heads: %s", len(report.ignored_head_keys), _names(report.ignored_head_keys)
        )
    return model, report


def load_vle(
    model_dir: Path | str,
    head: Head | str = Head.BASE,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, LoadReport]:
    """Load a VLE checkpoint directory as the backbone or one of its head models, in eval mode.

    Args:
        model_dir: holds config.json and pytorch_model.bin (or model.safetensors, or shards).
        head: 'base' (VleModel), 'itm', 'vqa' or 'pbc'.
        dtype: weight dtype.
        device: where the model runs.

    Returns:
        The model and a report of the keys left out on purpose.

    Raises:
        ModelNotFoundError: no weights file.
        ModelLoadError: a bad config, or missing/unexpected keys (named).
    """
    model_dir = Path(model_dir)
    head = Head(head)
    config = load_config(model_dir)
    model, report = build_model(config, head, read_state_dict(model_dir))
    model.to(device=device, dtype=dtype)
    model.eval()
    return model, report
