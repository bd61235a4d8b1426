"""The training loop: AdamW with warm-up and cosine decay, checkpoints, resume, loss and throughput.

A task (see `tasks.py`) owns the model and says how one step's loss is computed and how the model is
saved; this loop owns everything else. Each step's batch and random draws depend only on
(seed, step), so a run resumed from a checkpoint continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from pixsearch.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
_STATE = "trainer_state.pt"


class Task(Protocol):
    """One kind of training: its model, the loss of a step, and saving in the backend's own format.

    `save` writes the model as the backend loads it; `save_checkpoint` writes what `restore` needs
    to continue with exactly the same weights (the same as `save`, unless saving rounds them).
    """

    backend: str
    model: torch.nn.Module
    items_per_step: int

    def loss(self, step: int) -> torch.Tensor: ...

    def save(self, directory: Path) -> None: ...

    def save_checkpoint(self, directory: Path) -> None: ...

    def restore(self, directory: Path) -> None: ...


@dataclass(frozen=True)
class TrainOptions:
    steps: int = 1000
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: int = 50
    checkpoint_every: int = 200
    keep_checkpoints: int = 1
    log_every: int = 25
    resume: bool = True  # continue from the last checkpoint in the output folder, if there is one

    def check(self) -> None:
        if self.steps < 1 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ConfigError("steps, checkpoint interval and log interval must be at least 1")
        if not 0 < self.lr < 1:
            raise ConfigError(f"learning rate must be in (0, 1), got {self.lr}")


@dataclass(frozen=True)
class TrainProgress:
    step: int  # steps done
    total: int
    loss: float
    items_per_second: float
    elapsed: float


@dataclass
class TrainReport:
    backend: str
    output: Path
    steps: int
    resumed_from: int  # 0 for a fresh run
    final_loss: float
    seconds: float
    items_per_second: float

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "output": str(self.output)}


def _schedule(options: TrainOptions) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < options.warmup:
            return (step + 1) / options.warmup
        progress = (step - options.warmup) / max(1, options.steps - options.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def last_checkpoint(output: Path) -> Path | None:
    """The newest complete checkpoint folder under `output`, or None."""
    folder = Path(output) / CHECKPOINTS
    done = sorted(p for p in folder.glob("step-*") if (p / _STATE).exists() and not p.name.endswith(".partial"))
    return done[-1] if done else None


def train(
    task: Task, output: Path, options: TrainOptions, progress: Callable[[TrainProgress], None] | None = None
) -> TrainReport:
    """Train `task.model` for `options.steps` steps and save it into `output` in the backend's format.

    Checkpoints go to `output/checkpoints/step-N` every `checkpoint_every` steps (written to a
    temporary folder and renamed, so a kill never leaves a half checkpoint that looks complete).

    Raises:
        ConfigError: bad options, or a checkpoint of another backend in `output`.
    """
    options.check()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.AdamW(
        [p for p in task.model.parameters() if p.requires_grad], lr=options.lr, weight_decay=options.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(options))
    start = _resume(task, output, optimizer, scheduler) if options.resume else 0
    task.model.train()
    started, window_start, window_items = time.perf_counter(), time.perf_counter(), 0
    loss_value, rate = float("nan"), 0.0
    for step in range(start, options.steps):
        loss = task.loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(task.model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        loss_value = float(loss.detach())
        window_items += task.items_per_step
        done = step + 1
        now = time.perf_counter()
        rate = window_items / max(now - window_start, 1e-9)
        if done % options.log_every == 0 or done == options.steps:
            log.info("%s step %d/%d loss %.4f %.1f items/s", task.backend, done, options.steps, loss_value, rate)
            window_start, window_items = now, 0
        if progress:
            progress(TrainProgress(done, options.steps, loss_value, rate, now - started))
        if done % options.checkpoint_every == 0 and done < options.steps:
            _checkpoint(task, output, done, optimizer, scheduler, options)
    task.model.eval()
    task.save(output)
    seconds = time.perf_counter() - started
    report = TrainReport(
        task.backend,
        output,
        options.steps,
        start,
        loss_value,
        seconds,
        (options.steps - start) * task.items_per_step / max(seconds, 1e-9),
    )
    (output / "train_report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report


def _checkpoint(task: Task, output: Path, step: int, optimizer, scheduler, options: TrainOptions) -> None:
    folder = output / CHECKPOINTS / f"step-{step:08d}"
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    task.save_checkpoint(partial)
    torch.save(
        {
            "step": step,
            "backend": task.backend,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
        partial / _STATE,
    )
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    log.info("checkpoint %s", folder)
    kept = sorted((output / CHECKPOINTS).glob("step-*[0-9]"))
    for old in kept[: -options.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)


def _resume(task: Task, output: Path, optimizer, scheduler) -> int:
    folder = last_checkpoint(output)
    if folder is None:
        return 0
    state = torch.load(folder / _STATE, map_location="cpu", weights_only=True)
    if state.get("backend") != task.backend:
        raise ConfigError(
            f"{folder} is a checkpoint of {state.get('backend')!r}, not {task.backend!r}; use another output folder"
        )
    task.restore(folder)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    log.info("resuming %s from %s (step %d)", task.backend, folder, state["step"])
    return int(state["step"])
