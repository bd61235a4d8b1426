"""Loading a ModelScope mPLUG directory into `MplugModel`, with every key accounted for.

ModelScope's `MPlug.from_pretrained` unwraps a `model` or `module` entry, replaces `model.` in every
key and loads non-strict. Here the same keys are read, then each one is either loaded, or known to be
unused (below, each with its reason), or reported: missing and unexpected keys raise ModelLoadError
naming them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from pixsearch.errors import ConfigError, ModelLoadError
from pixsearch.models.mplug.bert import BertEmbeddings, LmPredictions
from pixsearch.models.mplug.config import MplugConfig, read_config, read_task
from pixsearch.models.mplug.modeling import PART_PREFIXES, TASK_PARTS, MplugModel

log = logging.getLogger(__name__)

CHECKPOINT = "pytorch_model.bin"

# keys that ModelScope checkpoints hold but inference never reads
_ALWAYS_UNUSED = (
    # the CLIP text tower: mPLUG builds a whole CLIP model but only runs its image tower
    re.compile(r"^visual_encoder\.(transformer|token_embedding|positional_embedding|ln_final)(\.|$)"),
    re.compile(r"^visual_encoder\.(text_projection|logit_scale)$"),
    # CLIP's image projection: mPLUG reads the tokens after ln_post (skip_last_layer=True)
    re.compile(r"^visual_encoder\.visual\.proj$"),
    # contrastive-training state: temperature and queues
    re.compile(r"^(temp|image_queue|text_queue|idx_queue|queue_ptr)$"),
    # momentum (distillation) copies, used only in training
    re.compile(r"^(visual_encoder|text_encoder|fusion_encoder|text_decoder|visn_fc|visn_layer_norm|vision_proj)_m\."),
    re.compile(r"^text_proj_m\."),
    # position_ids buffers: rebuilt identically, and older transformers leave them out of checkpoints
    re.compile(r"\.embeddings\.position_ids$"),
)
_FUSION_LAYER = re.compile(r"^fusion_encoder\.encoder\.layer\.(\d+)\.")
_LISTED = 20


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a ModelScope mPLUG checkpoint, with its keys as ModelScope rewrites them.

    Raises:
        ModelLoadError: the file cannot be read as a tensor state dict.
    """
    try:
        # memory-mapped where the file format allows: tensors this model does not use are never read
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - legacy (non-zip) files cannot be mapped; read them whole below
        state = None
    if state is None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - corrupt file, pickle refusal and I/O all mean: cannot load
            raise ModelLoadError(f"cannot read mPLUG checkpoint {path}: {type(error).__name__}: {error}") from error
    for wrapper in ("model", "module"):
        if isinstance(state, dict) and wrapper in state:
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"mPLUG checkpoint {path} is not a state dict of tensors")
    # ModelScope's own rule: every occurrence of 'model.' goes, not only a prefix
    return {key.replace("model.", ""): value for key, value in state.items()}


def is_unused(key: str, config: MplugConfig, skipped_prefixes: tuple[str, ...]) -> bool:
    """Whether a checkpoint key belongs to something this model does not run."""
    if key.startswith(skipped_prefixes) or any(p.search(key) for p in _ALWAYS_UNUSED):
        return True
    layer = _FUSION_LAYER.match(key)
    # fusion layers before the first one that runs are built by ModelScope but never called
    return layer is not None and int(layer.group(1)) < config.bert.fusion_start


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED])
    return shown + (f" ... and {len(keys) - _LISTED} more" if len(keys) > _LISTED else "")


def load_state(model: MplugModel, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `model`, or raise ModelLoadError naming missing, unexpected or misshapen keys."""
    expected = model.state_dict()
    task_parts = TASK_PARTS[model.config.task]
    skipped = tuple(p for part in task_parts - model.parts for p in PART_PREFIXES[part])
    unexpected = sorted(k for k in state if k not in expected and not is_unused(k, model.config, skipped))
    missing = sorted(k for k in expected if k not in state)
    misshapen = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if misshapen:
        problems.append(f"shape mismatches: {_names(misshapen)}")
    if problems:
        raise ModelLoadError(
            f"mPLUG checkpoint {source} does not fit the {model.config.task} model; " + "; ".join(problems)
        )
    model.load_state_dict({k: state[k] for k in expected}, strict=True)
    log.debug("loaded %d tensors from %s (%d unused)", len(expected), source, len(state) - len(expected))


def check_task(model_dir: Path, task: str) -> None:
    """Raise ConfigError when the directory says it holds a model for another task."""
    named = read_task(model_dir)
    if named is not None and named != task:
        raise ConfigError(f"mPLUG directory {model_dir} holds a {named} model, but a {task} model is needed")


def load_model(
    model_dir: Path, task: str, parts: Iterable[str], dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> MplugModel:
    """Build the named parts of the mPLUG model for `task` and load their weights.

    Args:
        model_dir: a ModelScope mPLUG directory (config.yaml, config_bert.json, vocab.txt, pytorch_model.bin).
        task: one of config.TASKS; the directory's own task must agree.
        parts: which parts to build (see modeling.RUN_PARTS).
        dtype: the dtype to run in; weights are loaded in float32 first.
        device: a torch device string.

    Raises:
        ConfigError: the task does not fit the directory, or the config asks for something unsupported.
        ModelLoadError: files unreadable, or keys missing, unexpected or of the wrong shape.
    """
    check_task(model_dir, task)
    config = read_config(model_dir, task)
    parts = frozenset(parts)
    if not parts <= TASK_PARTS[task]:
        raise ConfigError(f"mPLUG {task} models have no {', '.join(sorted(parts - TASK_PARTS[task]))}")
    # built on the meta device: no time spent on random weights that the checkpoint overwrites
    with torch.device("meta"):
        model = MplugModel(config, parts)
    model.to_empty(device="cpu")
    for module in model.modules():
        if isinstance(module, (BertEmbeddings, LmPredictions)):
            module.reset_after_materialise()
    load_state(model, read_checkpoint(model_dir / CHECKPOINT), str(model_dir / CHECKPOINT))
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
