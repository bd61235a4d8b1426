"""Training: tiny models from scratch, contrastive dual encoders, BLIP ITM / captioning / VQA, native mPLUG
fine-tuning in the publisher's layout (`native.py`), checkpoints."""

from __future__ import annotations

from pixsearch.train.loop import TrainOptions, TrainProgress, TrainReport, last_checkpoint, train
from pixsearch.train.run import TrainJob, run_job
from pixsearch.train.tiny import TINY_RERANKER, TinyConfig, build_tiny

__all__ = [
    "TINY_RERANKER",
    "TinyConfig",
    "TrainJob",
    "TrainOptions",
    "TrainProgress",
    "TrainReport",
    "build_tiny",
    "last_checkpoint",
    "run_job",
    "train",
]
