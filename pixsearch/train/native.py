"""Fine-tuning the models pixsearch runs natively (mPLUG, VLE, OFA), saved in the publisher's layout.

`pixsearch train` drives every task with one loop (`loop.py`: AdamW, checkpoints, resume, progress);
this module holds what a natively run model needs on top of it:

- `NativeBackend`: how one backend is trained: the files its input folder must hold, its image
  transform, its data reader (one of `data.py`'s, whose bad rows are named by file and line), the
  task class, and optionally a tiny random model for training from scratch;
- `NativeTask`: the base of such tasks: per-step batches and random draws (from seed and step only,
  so a resumed run continues exactly), saving, checkpoints and restoring;
- `save_publisher_layout` / `write_weights`: the output folder is the input folder's files with the
  weights rewritten: exactly the input checkpoint's keys, in its order, with its shapes and dtypes
  (anything not trained, such as momentum copies or unused towers, keeps its bytes), checked after
  writing. So the result loads by the same spec in pixsearch and in the publisher's own code.

How a new task plugs in:
1. Write a `NativeTask` subclass: load the model in float32 with gradients on in `__init__`, and
   implement `loss(step)` (draw the batch with `self.indices(step)` and randomness with
   `self.rng(step)` / `self.generator(step)`), `trained_weights()` (every trained tensor under its
   name in the publisher's checkpoint) and `read_weights(folder)` (the model's state dict as read
   back from a saved folder by the backend's own loader).
2. Describe the backend with a `NativeBackend` constant next to the task.
3. Add one line to `_BACKENDS` below ("backend name" -> "module:CONSTANT"); `pixsearch train BACKEND`
   and `TrainJob(backend=...)` then accept it.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixsearch.errors import ConfigError, ModelLoadError
from pixsearch.models.preprocess import ImageTransform
from pixsearch.train.data import TrainData
from pixsearch.train.tasks import batch_indices

log = logging.getLogger(__name__)

# backend -> "module:NativeBackend constant"; imported only when that backend is trained
_BACKENDS: dict[str, str] = {
    "mplug-itm": "pixsearch.train.mplug_tasks:ITM_BACKEND",
    "mplug-vqa": "pixsearch.train.mplug_tasks:VQA_BACKEND",
    "mplug-caption": "pixsearch.train.mplug_tasks:CAPTION_BACKEND",
    "vle-vqa": "pixsearch.train.vle_tasks:VQA_BACKEND",
    "vle-itm": "pixsearch.train.vle_tasks:ITM_BACKEND",
    "ofa-ve": "pixsearch.train.ofa_tasks:VE_BACKEND",
}
NATIVE_TRAINABLE = tuple(_BACKENDS)

MASTER_WEIGHTS = "trainer_master.pt"  # float32 weights in a checkpoint whose publisher dtype loses bits
# files a training run writes into its output folder: never copied as part of a model
_RUN_FILES = frozenset({"train_report.json", "trainer_state.pt", MASTER_WEIGHTS})
_RUN_FOLDERS = frozenset({"checkpoints", "init"})

Loader = Callable[..., TrainData]  # data.load_captions / data.load_questions signature


@dataclass(frozen=True)
class NativeSetup:
    """What a native task is built from."""

    backend: str
    directory: Path  # the input folder, in the publisher's layout
    data: TrainData
    batch_size: int
    seed: int
    steps: int  # total steps of the run (tasks may schedule by it)
    from_scratch: bool = False  # the input is a random tiny model built for this run, not a trained one
    mined: Any = None  # mining.HardNegatives from --miner, for the tasks that take them


@dataclass(frozen=True)
class NativeBackend:
    """How `pixsearch train` trains one natively run backend.

    required: files the input folder must hold (checked before anything loads).
    weights: the weights file of the publisher's layout, relative to the folder.
    transform: the image transform the backend serves the folder with (training uses the same).
    loader: the data reader (`data.load_captions`, `data.load_questions` or one of that signature).
    task: builds the task from a `NativeSetup`.
    data_texts: "captions" or "questions": which texts a tiny model's vocabulary is made from.
    build_tiny: (folder, words, TinyConfig, seed) -> None: a random model in the publisher's layout,
        for training from scratch; None when the backend is only fine-tuned (`--init` required).
    """

    required: tuple[str, ...]
    weights: str
    transform: Callable[[Path], ImageTransform]
    loader: Loader
    task: Callable[[NativeSetup], Any]
    data_texts: str = "captions"
    build_tiny: Callable[..., None] | None = None


def native_backend(name: str) -> NativeBackend:
    """The `NativeBackend` of a backend name (raises ConfigError for names not in `NATIVE_TRAINABLE`)."""
    if name not in _BACKENDS:
        raise ConfigError(f"{name!r} is not a natively trained backend; those are {', '.join(NATIVE_TRAINABLE)}")
    module, attribute = _BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


class NativeTask:
    """Base of native tasks: batches, randomness, saving in the publisher's layout, checkpoints, restore.

    Subclasses set `model` (float32, trainable) in `__init__` and implement `loss`, `trained_weights`
    and `read_weights`; `weights_file` names the weights file of the layout.
    """

    weights_file: str = "pytorch_model.bin"

    def __init__(self, setup: NativeSetup) -> None:
        self.backend = setup.backend
        self.directory = Path(setup.directory)
        self.data = setup.data
        self.seed = setup.seed
        self.steps = setup.steps
        self.batch_size = min(setup.batch_size, len(setup.data))
        self.items_per_step = self.batch_size
        self.pixels = torch.from_numpy(setup.data.pixels)
        self.model: torch.nn.Module
        self._rounds: bool | None = None  # whether the publisher's dtypes round the trained weights

    def rng(self, step: int) -> np.random.Generator:
        """NumPy randomness of one step: depends only on (seed, step)."""
        return np.random.default_rng([self.seed, step, 1])

    def generator(self, step: int) -> torch.Generator:
        """Torch randomness of one step (e.g. `torch.multinomial`): depends only on (seed, step)."""
        return torch.Generator().manual_seed(int(np.random.default_rng([self.seed, step, 2]).integers(2**62)))

    def indices(self, step: int) -> np.ndarray:
        """The data rows of one step: seeded epoch permutations cut into full batches."""
        return batch_indices(len(self.data), self.batch_size, self.seed, step)

    def loss(self, step: int) -> torch.Tensor:
        raise NotImplementedError

    def trained_weights(self) -> dict[str, torch.Tensor]:
        """Every trained tensor under its key in the publisher's checkpoint file."""
        raise NotImplementedError

    def read_weights(self, directory: Path) -> dict[str, torch.Tensor]:
        """`self.model`'s state dict as the backend's own loader reads it from a saved folder."""
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        """Write the model into `directory` in the publisher's layout (see `save_publisher_layout`)."""
        save_publisher_layout(self.directory, Path(directory), self.weights_file, self.trained_weights())

    def save_checkpoint(self, directory: Path) -> None:
        """`save`, plus the float32 weights when the publisher's dtype would round them (so resuming
        continues from exactly the weights the run had, not from their float16 copy)."""
        self.save(directory)
        if self._rounds is None:
            self._rounds = _rounds(self.directory / self.weights_file, self.trained_weights())
        if self._rounds:
            torch.save(self.model.state_dict(), Path(directory) / MASTER_WEIGHTS)

    def restore(self, directory: Path) -> None:
        """Load the weights of a checkpoint folder written by `save_checkpoint` into `self.model`."""
        master = Path(directory) / MASTER_WEIGHTS
        if master.exists():
            weights = torch.load(master, map_location="cpu", weights_only=True)
        else:
            weights = self.read_weights(Path(directory))
        self.model.load_state_dict(weights)


def _rounds(source: Path, updates: Mapping[str, torch.Tensor]) -> bool:
    """Whether writing `updates` in the source checkpoint's dtypes loses precision."""
    original = read_state_dict(source)
    return any(k in original and original[k].dtype != value.dtype for k, value in updates.items())


def save_publisher_layout(
    source: Path, target: Path, weights_file: str, updates: Mapping[str, torch.Tensor], changed: Collection[str] = ()
) -> None:
    """Copy the folder `source` to `target` with the weights file rewritten by `write_weights`
    (`changed`: the keys whose shape may change, or that are new; see there).

    Every file and folder of `source` is copied except its weights file and what a training run
    writes (checkpoints, reports), so configs, vocabularies and processor files come along unchanged.

    Raises:
        ConfigError: `target` is `source` (the input would be overwritten while it is read).
        ModelLoadError: see `write_weights`.
    """
    copy_model_files(source, target, weights_file)
    write_weights(Path(source) / weights_file, Path(target) / weights_file, updates, changed)


def copy_model_files(source: Path, target: Path, weights_file: str) -> None:
    """Copy every file and folder of `source` to `target` except its weights file and what a
    training run writes (checkpoints, reports).

    Raises:
        ConfigError: `target` is `source` (the input would be overwritten while it is read).
    """
    source, target = Path(source), Path(target)
    if source.resolve() == target.resolve():
        raise ConfigError(f"the output folder {target} is the input folder; write the fine-tuned model elsewhere")
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        if entry.name == weights_file or entry.name in _RUN_FILES or entry.name in _RUN_FOLDERS:
            continue
        if entry.is_dir():
            if target.resolve().is_relative_to(entry.resolve()):
                continue  # the output folder inside the input folder: never copy a folder into itself
            shutil.copytree(entry, target / entry.name, dirs_exist_ok=True)
        else:
            shutil.copyfile(entry, target / entry.name)


def write_weights(
    source: Path, target: Path, updates: Mapping[str, torch.Tensor], changed: Collection[str] = ()
) -> None:
    """Write the checkpoint `source` to `target` with the tensors in `updates` replaced.

    The file keeps the source's format (torch pickle, or safetensors by suffix), its wrapper
    (`{"model": ...}` or `{"module": ...}` where it has one), its keys in order, and each tensor's
    shape and dtype (updates are cast to the stored dtype). The written file is read back and
    compared with the source.

    `changed` names the intended exceptions: keys whose update may have another shape (a classifier
    grown by new labels) or that the source lacks (a new head; written after the source's keys, in
    the update's dtype). Every other key keeps the source's shape and dtype.

    Raises:
        ModelLoadError: an update names a key the source lacks or has another shape (not in
            `changed`); or the file written does not have exactly the expected keys, shapes and dtypes.
    """
    raw = read_weights_file(source)
    original = _flat(raw, source)
    changed = set(changed)
    unknown = sorted(k for k in updates if k not in original and k not in changed)
    misshapen = sorted(
        f"{k} (checkpoint {tuple(original[k].shape)}, trained {tuple(v.shape)})"
        for k, v in updates.items()
        if k in original and k not in changed and original[k].shape != v.shape
    )
    if unknown or misshapen:
        raise ModelLoadError(
            f"cannot write the trained weights in the layout of {source}: "
            + "; ".join(p for p in (_listed("keys it lacks", unknown), _listed("other shapes", misshapen)) if p)
        )
    # tensors not trained are written as read (memory-mapped: not copied); trained ones are cloned, so
    # a tensor the model ties to another (a decoder bias stored under two names) is written under each
    flat = {k: (updates[k].detach().to("cpu", v.dtype).clone() if k in updates else v) for k, v in original.items()}
    flat.update({k: v.detach().to("cpu").clone() for k, v in updates.items() if k not in original})
    partial = target.with_name(f"partial-{target.name}")  # same suffix: the same format
    _write_weights_file(partial, _rewrap(raw, flat))
    expected = {**original, **{k: flat[k] for k in changed if k in flat}}
    check_same_layout(expected, read_state_dict(partial), f"{target} (written from {source})")
    os.replace(partial, target)


def check_same_layout(expected: Mapping[str, torch.Tensor], actual: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise ModelLoadError unless `actual` has exactly `expected`'s keys, shapes and dtypes."""
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    different = sorted(
        f"{k} ({tuple(expected[k].shape)} {expected[k].dtype} -> {tuple(actual[k].shape)} {actual[k].dtype})"
        for k in expected
        if k in actual and (expected[k].shape != actual[k].shape or expected[k].dtype != actual[k].dtype)
    )
    problems = [_listed("missing", missing), _listed("extra", extra), _listed("changed", different)]
    if any(problems):
        raise ModelLoadError(f"{what} does not match the input checkpoint: " + "; ".join(p for p in problems if p))


def _listed(label: str, keys: list[str], shown: int = 10) -> str:
    if not keys:
        return ""
    more = f" ... and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"{label}: {', '.join(keys[:shown])}{more}"


def read_weights_file(path: Path) -> Any:
    """A checkpoint file as stored: a safetensors dict, or whatever the torch pickle holds (tensors only).

    Raises:
        ModelLoadError: the file cannot be read, or holds no state dict of tensors.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        try:  # memory-mapped: a large checkpoint is not read twice into memory
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - missing, corrupt, pickle refusal: all mean unreadable
        raise ModelLoadError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from error


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint file's flat state dict, keys as stored (unwrapped from "model" / "module").

    Raises:
        ModelLoadError: the file cannot be read, or holds no state dict of tensors.
    """
    return _flat(read_weights_file(path), path)


def _wrapper(raw: Any) -> str | None:
    """The key under which a checkpoint keeps its state dict ("model" / "module"), or None when flat."""
    for key in ("model", "module"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            return key
    return None


def _flat(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    key = _wrapper(raw)
    state = raw[key] if key else raw
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"checkpoint {path} is not a state dict of tensors")
    return state


def _rewrap(raw: Any, flat: dict[str, torch.Tensor]) -> Any:
    key = _wrapper(raw)
    return {**raw, key: flat} if key else flat


def _write_weights_file(path: Path, content: Any) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(content, str(path), metadata={"format": "pt"})
    else:
        torch.save(content, path)
