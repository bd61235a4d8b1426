"""A VLE checkpoint opened for training: which checkpoint key each model weight is stored under, and
the weights of a head the checkpoint lacks.

The published hfl/vle-* folders hold `config.json`, one weights file (`pytorch_model.bin` or
`model.safetensors`) and the processor files; a head model keeps its backbone under `vle.`. The
fine-tuned folder is written by `native.save_publisher_layout`: the input's keys, shapes and
dtypes, with two intended exceptions the tasks name (a VQA classifier grown by new answers, a head
the checkpoint did not have).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pixsearch.errors import ConfigError, ModelLoadError
from pixsearch.models.vle.heads import HEAD_MODELS, Head
from pixsearch.models.vle.weights import BACKBONE_PREFIX, align_keys, find_weight_files

INITIALIZER_RANGE = 0.02  # VLE's config default; new head weights are drawn as the original's _init_weights


def weights_file(directory: Path) -> str:
    """The name of the folder's single weights file.

    Raises:
        ModelNotFoundError: no weights file.
        ConfigError: sharded weights (training writes one file, as the published checkpoints are).
    """
    files = find_weight_files(Path(directory))
    if len(files) != 1:
        raise ConfigError(f"{directory}: VLE training reads a single weights file, not {len(files)} shards")
    return files[0].name


def stored_names(keys: list[str], head: Head) -> dict[str, str]:
    """The head model's state-dict key -> the checkpoint key it is stored under.

    Uses the loader's own `align_keys`, so the names follow exactly the rules loading follows.

    Raises:
        ConfigError: a bare backbone (no `vle.` prefix): a head saved beside it would not load in the
            original (transformers treats a head next to an unprefixed backbone as corrupted).
    """
    if not any(key.startswith(BACKBONE_PREFIX) for key in keys):
        raise ConfigError(
            "a bare VLE backbone (VLEModel) has no task head; fine-tune a head or pre-training checkpoint "
            "(its backbone keys start with 'vle.', as hfl/vle-base's do)"
        )
    marks = {key: torch.tensor(index) for index, key in enumerate(keys)}
    aligned, _ = align_keys(marks, head, getattr(HEAD_MODELS[head], "head_name", ""))
    return {name: keys[int(mark)] for name, mark in aligned.items()}


def new_head_state(head: Head, width: int, out: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Fresh weights of a head, drawn as the original's `_init_weights`: linear weights N(0, 0.02),
    biases 0, LayerNorms the identity. `width` is the fused width (2 x hidden), `out` the classes."""

    def linear(name: str, rows: int, cols: int) -> dict[str, torch.Tensor]:
        weight = torch.randn(rows, cols, generator=generator) * INITIALIZER_RANGE
        return {f"{name}.weight": weight, f"{name}.bias": torch.zeros(rows)}

    if head is Head.ITM:
        return linear("itm_score.fc", 2, width)
    if head is not Head.VQA:
        raise ModelLoadError(f"no new {head} head is made for training")
    norm = {"vqa_classifier.1.weight": torch.ones(width), "vqa_classifier.1.bias": torch.zeros(width)}
    return {**linear("vqa_classifier.0", width, width), **norm, **linear("vqa_classifier.3", out, width)}
