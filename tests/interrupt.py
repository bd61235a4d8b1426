"""Killing a training run at a given step, as a user's Ctrl-C or a crash would (for resume tests)."""

from __future__ import annotations

from collections.abc import Callable


class Interrupt(Exception):
    """Raised from the progress callback: the run stops mid-way, after its last checkpoint."""


def stop_at(step: int) -> Callable[[str, int, int, float | None], None]:
    """A `run_job` progress callback that interrupts the run once `step` training steps are done."""

    def progress(phase: str, done: int, total: int, loss: float | None) -> None:
        if phase == "train" and done == step:
            raise Interrupt

    return progress
