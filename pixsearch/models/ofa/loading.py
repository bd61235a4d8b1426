"""Build an `OfaModel` from a model directory and load its checkpoint strictly, by name."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from pixsearch.errors import ModelLoadError, ModelNotFoundError
from pixsearch.models.ofa.config import OfaConfig
from pixsearch.models.ofa.modeling import REBUILT_BUFFERS, OfaModel

log = logging.getLogger(__name__)

CHECKPOINT_NAMES = ("model.safetensors", "pytorch_model.bin")
# One tensor saved under up to three names when input and output embeddings are shared.
TIED_EMBEDDING = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.output_projection.weight")
_NAMES_SHOWN = 40


def find_checkpoint(model_dir: Path) -> Path:
    for name in CHECKPOINT_NAMES:
        if (model_dir / name).exists():
            return model_dir / name
    raise ModelNotFoundError(f"OFA model directory {model_dir} holds no checkpoint ({' or '.join(CHECKPOINT_NAMES)})")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint; unwrap {'model': ...}/{'module': ...} and a leading 'model.' on every key."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - corrupt files raise many types
        raise ModelLoadError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from error
    for wrapper in ("model", "module", "state_dict"):
        if isinstance(state, Mapping) and set(state) == {wrapper} and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise ModelLoadError(f"checkpoint {path} does not hold a state dict")
    if state and all(key.startswith("model.") for key in state):
        state = {key[len("model.") :]: value for key, value in state.items()}
    return dict(state)


def _names(keys: list[str]) -> str:
    shown = ", ".join(sorted(keys)[:_NAMES_SHOWN])
    return shown + (f" ... and {len(keys) - _NAMES_SHOWN} more" if len(keys) > _NAMES_SHOWN else "")


def _fill_tied_embedding(model: OfaModel, state: dict[str, torch.Tensor]) -> None:
    """Checkpoints may store the shared embedding under one, two or all three of its names."""
    names = TIED_EMBEDDING if model.config.share_decoder_input_output_embed else TIED_EMBEDDING[:2]
    present = [name for name in names if name in state]
    if not present:
        return  # reported as missing below
    first = state[present[0]]
    differing = [name for name in present[1:] if not torch.equal(state[name], first)]
    if differing:
        raise ModelLoadError(
            f"checkpoint stores different tensors under the tied embedding names {present[0]} and {', '.join(differing)}"
        )
    for name in names:
        state.setdefault(name, first)


def _take_rebuilt_buffers(model: OfaModel, state: dict[str, torch.Tensor]) -> None:
    """The index buffers are rebuilt from the config, so a checkpoint may leave them out (the
    conformance fixture does). When it has them, its values win, as they would in ModelScope."""
    buffers = dict(model.named_buffers())
    for name in REBUILT_BUFFERS:
        if name not in state:
            continue
        saved, built = state.pop(name), buffers[name]
        if saved.shape != built.shape:
            raise ModelLoadError(
                f"checkpoint buffer {name} has shape {tuple(saved.shape)}, the config gives {tuple(built.shape)}"
            )
        if not torch.equal(saved.to(built.dtype), built):
            log.warning(
                "checkpoint buffer %s differs from the one rebuilt from config.json; using the checkpoint's", name
            )
            built.copy_(saved)


def load_state(model: OfaModel, state: dict[str, torch.Tensor]) -> None:
    """Load `state` into `model`, strictly.

    Raises:
        ModelLoadError: naming every missing or unexpected key, and every shape mismatch.
    """
    state = dict(state)
    _fill_tied_embedding(model, state)
    _take_rebuilt_buffers(model, state)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (checkpoint vs config): {_names(mismatched)}")
    if problems:
        raise ModelLoadError("OFA checkpoint does not fit its config.json; " + "; ".join(problems))
    with torch.no_grad():
        model.load_state_dict(state, strict=True)


def load_model(model_dir: Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> OfaModel:
    """Build the model `config.json` describes and load the checkpoint next to it, in eval mode.

    Raises:
        ModelLoadError: bad config, unreadable checkpoint, or keys that do not fit (named).
    """
    config = OfaConfig.from_file(model_dir / "config.json")
    model = OfaModel(config)
    load_state(model, read_state_dict(find_checkpoint(model_dir)))
    return model.to(device=device, dtype=dtype).eval()
