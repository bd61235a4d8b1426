"""A training job from start to end: the starting checkpoint (a published one, or a tiny one built
from scratch), the data checked and decoded, hard negatives mined for the reranker, the loop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pixsearch.errors import ConfigError
from pixsearch.evaluation.readers import BadRowPolicy
from pixsearch.models import registry
from pixsearch.models.hub import resolve_source
from pixsearch.models.roles import Role
from pixsearch.models.spec import ModelOptions, ModelSpec
from pixsearch.train.data import TrainData, attach_negatives, load_captions, load_questions
from pixsearch.train.loop import TrainOptions, TrainProgress, TrainReport, train
from pixsearch.train.mining import HardNegatives, mine
from pixsearch.train.native import NATIVE_TRAINABLE, NativeBackend, NativeSetup, native_backend
from pixsearch.train.tasks import TRAINABLE, image_transform, model_directory
from pixsearch.train.tiny import TinyConfig, build_tiny
from pixsearch.train.tokenizer import words_of

log = logging.getLogger(__name__)

RERANKERS_WITH_NEGATIVES = ("blip-itm", "vle-itm", "mplug-itm")  # the ITM tasks that use explicit false captions
Progress = Callable[[str, int, int, float | None], None]  # (phase, done, total, loss or None)


@dataclass(frozen=True)
class TrainJob:
    """What to train.

    backend: clip, siglip, blip-itm, blip-caption, blip-vqa, or a natively run model (see
        `native.NATIVE_TRAINABLE`: mplug-itm, mplug-vqa, mplug-caption, ...).
    data: a captions file (Karpathy JSON, CSV, JSONL); for VQA, a questions JSONL file; for ofa-ve, a
        statements CSV / JSONL file.
    init: the checkpoint to start from (a folder or hub id); None builds a tiny model from scratch.
    miner: for blip-itm (required) and mplug-itm, the dual encoder spec whose confusions give the hard
        negatives (mplug-itm without one draws them from each batch by its own ITC, as the original).
    negatives: for blip-itm, vle-itm or mplug-itm, an optional file of captions false of the training
        images (CSV or JSONL with columns image and negative, paths relative to image_root); they teach
        word order.
    image_ranked: for blip-itm, also rank each caption's image against this many of the images the miner
        confuses the caption with (0: off; see `blip_tasks.ItmTask`).
    """

    backend: str
    data: Path
    output: Path
    init: str | None = None
    tiny: TinyConfig = field(default_factory=TinyConfig)
    image_root: Path | None = None
    split: str | None = "train"
    policy: BadRowPolicy = BadRowPolicy.SKIP
    batch_size: int = 64
    seed: int = 0
    miner: str | None = None
    negatives: Path | None = None
    options: TrainOptions = field(default_factory=TrainOptions)
    image_ranked: int = 0

    def check(self) -> None:
        if self.image_ranked and (self.backend != "blip-itm" or self.image_ranked < 0):
            raise ConfigError(
                f"image ranking takes a count >= 0 and trains blip-itm, got {self.image_ranked} for {self.backend}"
            )
        if self.backend not in TRAINABLE + NATIVE_TRAINABLE:
            known = ", ".join(TRAINABLE + NATIVE_TRAINABLE)
            raise ConfigError(f"pixsearch cannot train {self.backend!r}; it trains {known}")
        if self.miner and self.backend not in ("blip-itm", "mplug-itm"):
            raise ConfigError(f"a miner (--miner) mines hard negatives for blip-itm or mplug-itm, not {self.backend}")
        if self.backend == "blip-itm" and not self.miner:
            raise ConfigError("training blip-itm needs a dual encoder to mine hard negatives (--miner SPEC)")
        if self.negatives is not None and self.backend not in RERANKERS_WITH_NEGATIVES:
            known = " or ".join(RERANKERS_WITH_NEGATIVES)
            raise ConfigError(f"a negatives file trains a {known} reranker, not {self.backend}")
        if self.backend == "siglip" and self.init is None:
            raise ConfigError(
                "siglip is fine-tuned from a checkpoint (--init); tiny models from scratch are clip / blip"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        self.options.check()


def _silent(_phase: str, _done: int, _total: int, _loss: float | None) -> None:
    return None


def run_job(job: TrainJob, progress: Progress = _silent, model_options: ModelOptions | None = None) -> TrainReport:
    """Run a training job; the trained model ends up in `job.output` (loadable as `backend:output`).

    Raises:
        ConfigError, DataSetError: bad job settings, or bad rows under the STOP policy (before training).
        ModelNotFoundError, ModelLoadError: the starting checkpoint or the miner cannot be loaded.
    """
    job.check()
    output = Path(job.output)
    native = native_backend(job.backend) if job.backend in NATIVE_TRAINABLE else None
    init = _starting_point(job, output, native)
    spec = ModelSpec(job.backend, str(init))
    if native is not None:
        directory = resolve_source(spec, required=native.required)
        if directory.resolve() == output.resolve():
            raise ConfigError(f"--out {output} is the --init folder; write the fine-tuned model elsewhere")
        transform, loader = native.transform(directory), native.loader
    else:
        directory = model_directory(spec)
        transform = image_transform(spec, directory)
        loader = load_questions if job.backend == "blip-vqa" else load_captions
    decode = lambda done, total: progress("check images", done, total, None)  # noqa: E731
    data = loader(job.data, transform, image_root=job.image_root, split=job.split, policy=job.policy, progress=decode)
    if job.negatives is not None:
        kept = attach_negatives(data, job.negatives, image_root=job.image_root, policy=job.policy)
        log.info("%d explicit negatives for %d training images", kept, sum(1 for n in data.negatives if n))
    if native is not None:
        mined = _mined(job, data, progress, model_options) if job.miner else None
        setup = NativeSetup(
            job.backend, directory, data, job.batch_size, job.seed, job.options.steps, job.init is None, mined
        )
        task = native.task(setup)
    else:
        task = _task(job, spec, data, progress, model_options or ModelOptions(dtype="float32"))

    def step(event: TrainProgress) -> None:
        progress("train", event.step, event.total, event.loss)

    return train(task, output, job.options, step)


def _starting_point(job: TrainJob, output: Path, native: NativeBackend | None) -> str:
    if job.init is not None:
        return job.init
    if native is not None and native.build_tiny is None:
        raise ConfigError(f"{job.backend} is fine-tuned from a checkpoint (--init); it has no tiny model from scratch")
    # from scratch: the tokenizer's words come from the training texts, so the build needs the data
    init = output / "init"
    marker = native.weights if native is not None else "config.json"  # written last
    if not (init / marker).exists():
        words = words_of(_texts(job, native))
        log.info("building a tiny %s from scratch in %s (%d words)", job.backend, init, len(words))
        if native is not None and native.build_tiny is not None:
            native.build_tiny(init, words, job.tiny, job.seed)
        else:
            build_tiny(init, job.backend, words, job.tiny, job.seed)
    return str(init)


def _texts(job: TrainJob, native: NativeBackend | None) -> list[str]:
    from pixsearch.evaluation.readers import read_pairs, read_questions

    if job.backend == "blip-vqa" or (native is not None and native.data_texts == "questions"):
        questions = read_questions(job.data, job.image_root, check_images=False).questions
        return [q.question for q in questions] + [a for q in questions for a in q.answers]
    return [pair.caption for pair in read_pairs(job.data, job.image_root, check_images=False).pairs]


def _task(job: TrainJob, spec: ModelSpec, data: TrainData, progress: Progress, model_options: ModelOptions):
    from pixsearch.train.blip_tasks import CaptionTask, ItmTask, VqaTask
    from pixsearch.train.tasks import ContrastiveTask

    if job.backend in ("clip", "siglip"):
        return ContrastiveTask(spec, data, job.batch_size, job.seed)
    if job.backend == "blip-caption":
        return CaptionTask(spec, data, job.batch_size, job.seed)
    if job.backend == "blip-vqa":
        return VqaTask(spec, data, job.batch_size, job.seed)
    negatives = _mined(job, data, progress, model_options)
    steps = job.options.steps
    return ItmTask(
        spec,
        data,
        negatives,
        job.batch_size,
        job.seed,
        hard_from=int(0.3 * steps),
        hard_ramp=int(0.2 * steps),
        image_ranked=job.image_ranked,
    )


def _mined(job: TrainJob, data: TrainData, progress: Progress, model_options: ModelOptions | None) -> HardNegatives:
    """The hard negatives the job's miner (a dual encoder) finds among the training images and captions."""
    assert job.miner is not None
    miner = registry.create(job.miner, Role.DUAL_ENCODER, model_options or ModelOptions(dtype="float32"))
    try:
        return mine(miner, data, progress=lambda done, total: progress("mine negatives", done, total, None))
    finally:
        miner.close()
