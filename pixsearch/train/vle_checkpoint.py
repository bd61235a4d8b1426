"""A VLE checkpoint opened for training, and the trained model written back in the publisher's layout.

The published hfl/vle-* folders hold `config.json`, `pytorch_model.bin` (or safetensors, or shards
named by an index) and the processor files. A fine-tuned folder is written the same way, with
exactly the input's keys, shapes and dtypes: tensors the model trains are written back under their
checkpoint names, cast to the checkpoint's dtype; tensors it does not hold (other tasks' heads,
the `position_ids` buffers older checkpoints carry) are written back unchanged. Two changes are
intended and said where they happen: a head the checkpoint lacked is added (VQA on the pre-training
checkpoint, say), and a VQA classifier grows by one row per new answer.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pixsearch.errors import ModelLoadError
from pixsearch.models.vle.heads import HEAD_MODELS, Head
from pixsearch.models.vle.weights import (
    BACKBONE_PREFIX,
    INDEX_FILES,
    align_keys,
    find_weight_files,
    read_state_dict,
)

log = logging.getLogger(__name__)

CONFIG = "config.json"
# what a training run writes next to a model; never copied from a starting folder into a new one
TRAINING_FILES = ("train_report.json", "trainer_state.pt")
INITIALIZER_RANGE = 0.02  # VLE's config default; new head weights are drawn as the original's _init_weights


def model_names(keys: list[str], head: Head) -> dict[str, str]:
    """Checkpoint key -> the key of the head model's state dict, for the keys the model holds.

    Uses the loader's own `align_keys`, so the names follow exactly the rules loading follows.
    """
    marks = {key: torch.tensor(index) for index, key in enumerate(keys)}
    aligned, _ = align_keys(marks, head, getattr(HEAD_MODELS[head], "head_name", ""))
    return {keys[int(mark)]: name for name, mark in aligned.items()}


@dataclass
class VleSource:
    """What training needs to know about the starting folder to write the result like it."""

    directory: Path
    raw_config: dict[str, Any]
    state: dict[str, torch.Tensor]  # as read: checkpoint names, checkpoint dtypes
    files: dict[str, str]  # checkpoint key -> the weight file that holds it
    index_name: str | None  # the shard index file, if the weights are sharded

    @classmethod
    def read(cls, directory: Path) -> VleSource:
        """Read config.json and every tensor of the checkpoint in `directory`.

        Raises:
            ModelNotFoundError: no weights file.
            ModelLoadError: an unreadable config or checkpoint.
        """
        directory = Path(directory)
        try:
            raw = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ModelLoadError(f"cannot read VLE config {directory / CONFIG}: {error}") from error
        # cloned out of the memory map: training writes to these tensors
        state = {key: tensor.clone() for key, tensor in read_state_dict(directory).items()}
        index = next((name for name in INDEX_FILES if (directory / name).exists()), None)
        if index:
            files = dict(json.loads((directory / index).read_text(encoding="utf-8"))["weight_map"])
        else:
            files = dict.fromkeys(state, find_weight_files(directory)[0].name)
        return cls(directory, raw, state, files, index)

    @property
    def prefixed(self) -> bool:
        """Whether the backbone sits under `vle.` (a head or pre-training checkpoint)."""
        return any(key.startswith(BACKBONE_PREFIX) for key in self.state)

    def float_dtype(self) -> torch.dtype:
        """The dtype of the checkpoint's floating-point tensors (for tensors it did not have)."""
        return next((t.dtype for t in self.state.values() if t.is_floating_point()), torch.float32)


def new_head_state(head: Head, width: int, out: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Fresh weights of a head (model names), drawn as the original's `_init_weights`:
    linear weights N(0, 0.02), biases 0, LayerNorms the identity."""

    def linear(rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(rows, cols, generator=generator) * INITIALIZER_RANGE, torch.zeros(rows)

    if head is Head.ITM:
        weight, bias = linear(2, width)
        return {"itm_score.fc.weight": weight, "itm_score.fc.bias": bias}
    if head is not Head.VQA:
        raise ModelLoadError(f"no new {head} head is made for training")
    first_w, first_b = linear(width, width)
    last_w, last_b = linear(out, width)
    return {
        "vqa_classifier.0.weight": first_w,
        "vqa_classifier.0.bias": first_b,
        "vqa_classifier.1.weight": torch.ones(width),
        "vqa_classifier.1.bias": torch.zeros(width),
        "vqa_classifier.3.weight": last_w,
        "vqa_classifier.3.bias": last_b,
    }


class VleWriter:
    """Writes a head model over its source checkpoint: the input's keys, shapes and dtypes, plus
    the keys of a head the input lacked (`added`, model names)."""

    def __init__(self, source: VleSource, head: Head, added: list[str]) -> None:
        self.source = source
        self.head = head
        self.names = model_names(list(source.state), head)
        self.added = list(added)
        # a bare backbone has its keys unprefixed; a head beside it would not load in the original
        # (transformers calls such a checkpoint corrupted), so the result is saved as a head model saves
        self.rename = bool(self.added) and not source.prefixed

    def output_key(self, key: str) -> str:
        if not self.rename:
            return key
        return self.names.get(key, BACKBONE_PREFIX + key)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors to save, by output key, in the checkpoint's dtypes."""
        trained = model.state_dict()
        out: dict[str, torch.Tensor] = {}
        for key, original in self.source.state.items():
            name = self.names.get(key)
            tensor = original if name is None else trained[name].detach().to(original.dtype)
            out[self.output_key(key)] = tensor.contiguous()
        dtype = self.source.float_dtype()
        for name in self.added:
            out[name] = trained[name].detach().to(dtype).contiguous()
        return out

    def write(self, directory: Path, model: nn.Module, raw_config: dict[str, Any]) -> None:
        """Write config.json, the weights (same files, same format) and the processor files."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _copy_other_files(self.source.directory, directory, self._weight_files())
        state = self.state_dict(model)
        by_file: dict[str, dict[str, torch.Tensor]] = {}
        default_file = next(iter(self.source.files.values()))
        for key, tensor in state.items():
            source_key = key if key in self.source.files else None
            name = self.source.files[source_key] if source_key else self._file_of_new(key, default_file)
            by_file.setdefault(name, {})[key] = tensor
        for name, part in by_file.items():
            _save(directory / name, part)
        if self.source.index_name:
            weight_map = {key: name for name, part in by_file.items() for key in part}
            size = sum(t.numel() * t.element_size() for t in state.values())
            index = {"metadata": {"total_size": size}, "weight_map": dict(sorted(weight_map.items()))}
            (directory / self.source.index_name).write_text(json.dumps(index, indent=2) + "\n")
        (directory / CONFIG).write_text(json.dumps(raw_config, indent=2) + "\n", encoding="utf-8")

    def _file_of_new(self, key: str, default: str) -> str:
        """A renamed or added key goes where its input key (or the checkpoint's first file) was."""
        for source_key, name in self.source.files.items():
            if self.output_key(source_key) == key:
                return name
        return default

    def _weight_files(self) -> set[str]:
        names = set(self.source.files.values())
        return names | ({self.source.index_name} if self.source.index_name else set())


def _save(path: Path, state: dict[str, torch.Tensor]) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.clone() for k, v in state.items()}, str(path), metadata={"format": "pt"})
    else:
        torch.save(state, path)


def _copy_other_files(source: Path, target: Path, weights: set[str]) -> None:
    """Copy the processor and other files of the starting folder (not its weights or config)."""
    if source.resolve() == target.resolve():
        return
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name not in weights | {CONFIG, *TRAINING_FILES}:
            shutil.copyfile(path, target / path.name)


def load_trained(directory: Path, head: Head, model: nn.Module) -> None:
    """Load the weights a training run saved in `directory` into `model` (resuming), strictly.

    Raises:
        ModelLoadError: keys that do not fit the model.
    """
    state = read_state_dict(Path(directory))
    aligned, _ = align_keys(state, head, getattr(HEAD_MODELS[head], "head_name", ""))
    own = model.state_dict()
    missing, unexpected = sorted(own.keys() - aligned.keys()), sorted(aligned.keys() - own.keys())
    if missing or unexpected:
        raise ModelLoadError(
            f"{directory}: checkpoint does not fit; missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    with torch.no_grad():
        for name, tensor in own.items():
            tensor.copy_(aligned[name].to(tensor.dtype))
