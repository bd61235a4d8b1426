"""The recipe of the demo models that ship in `pixsearch/train/demo_models/`: the synthetic world and
how each tiny model is trained on it, then exported in float16 with a manifest.

Regenerate the shipped files (about 23 minutes on one CPU thread of a 2-core AMD EPYC, 18 of them the reranker):

    python -m pixsearch.train.demo_recipe --out pixsearch/train/demo_models

Every batch and random draw depends only on the seed and the step (see `loop.py`) and training runs on
one CPU thread, so the same seed, torch / transformers versions and CPU instruction set give the same
bytes; `--check` retrains into a temporary folder and compares every file's digest with the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pixsearch.search.relevance import CALIBRATION_FILE
from pixsearch.synth import SynthOptions
from pixsearch.train.loop import TrainOptions
from pixsearch.train.run import TrainJob, run_job
from pixsearch.train.tiny import TINY_RERANKER, TinyConfig

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int, float | None], None]  # (phase, done, total, loss or None)

PACKAGED = Path(__file__).parent / "demo_models"
MANIFEST = "manifest.json"
SEED = 0
THREADS = 1  # one thread: a multi-threaded reduction may add in another order and change the last bits
# The world the models are trained on and the demo library is made of; val is held out for choosing
# rerank settings, test for the figures in the manifest.
WORLD = SynthOptions(seed=SEED, train=800, val=100, test=100, image_size=64, twin_fraction=0.5)
QUICK_WORLD = SynthOptions(seed=SEED, train=24, val=0, test=8, image_size=64, twin_fraction=0.5)
QUICK_STEPS = 3


@dataclass(frozen=True)
class Refinement:
    """A second training stage that continues the first stage's model at a lower learning rate, each
    caption also ranked against `image_ranked` of the images the dual encoder confuses it with."""

    steps: int
    lr: float
    image_ranked: int


@dataclass(frozen=True)
class ModelRecipe:
    """How one demo model is trained (from scratch, on the world's train split)."""

    backend: str
    steps: int
    batch_size: int
    tiny: TinyConfig = field(default_factory=TinyConfig)
    lr: float = 1e-3
    warmup: int = 30
    refine: Refinement | None = None

    @property
    def data_file(self) -> str:
        return "questions.jsonl" if self.backend == "blip-vqa" else "captions.jsonl"


# clip first: it mines the reranker's hard negatives. The reranker's first stage learns to match; after
# 700 steps it was still weaker than the dual encoder everywhere (reranking lowered R@1). After 1500 it
# has started on relations ("left of"), which the second stage, ranking each caption's image against
# the dual encoder's confusions at a lower rate, turns into a reranker that lifts R@1 (see the manifest).
MODELS = (
    ModelRecipe("clip", steps=300, batch_size=64),
    ModelRecipe(
        "blip-itm", steps=1500, batch_size=32, tiny=TINY_RERANKER, refine=Refinement(steps=400, lr=3e-4, image_ranked=3)
    ),
    ModelRecipe("blip-caption", steps=500, batch_size=64),
    ModelRecipe("blip-vqa", steps=500, batch_size=64),
)
BACKENDS = tuple(recipe.backend for recipe in MODELS)


def training_jobs(recipe: ModelRecipe, data: Path, models: Path, quick: bool = False) -> list[TrainJob]:
    """The `TrainJob`s of one demo model, run in order; `models/<backend>` is the last one's output
    (`models/clip` mines for ITM; a refined model's first stage goes to `models/<backend>-stage1`)."""
    itm = recipe.backend == "blip-itm"
    output = models / recipe.backend
    first = TrainJob(
        backend=recipe.backend,
        data=data / recipe.data_file,
        output=output.with_name(f"{recipe.backend}-stage1") if recipe.refine else output,
        batch_size=recipe.batch_size,
        seed=SEED,
        miner=f"clip:{models / 'clip'}" if itm else None,
        negatives=data / "negatives.jsonl" if itm else None,
        tiny=recipe.tiny,
        options=_options(QUICK_STEPS if quick else recipe.steps, recipe.lr, recipe.warmup),
    )
    if recipe.refine is None:
        return [first]
    refine = recipe.refine
    second = replace(
        first,
        output=output,
        init=str(first.output),
        options=_options(QUICK_STEPS if quick else refine.steps, refine.lr, recipe.warmup),
        image_ranked=refine.image_ranked,
    )
    return [first, second]


def _options(steps: int, lr: float, warmup: int) -> TrainOptions:
    return TrainOptions(steps=steps, lr=lr, warmup=min(warmup, steps), checkpoint_every=200, resume=False)


def train_models(data: Path, models: Path, progress: Progress, quick: bool = False) -> dict[str, float]:
    """Train every demo model into `models/<backend>` from scratch; returns seconds per model.

    The caller sets torch's thread count (`THREADS` for reproducible bytes).
    """
    from pixsearch.models.spec import ModelOptions

    seconds: dict[str, float] = {}
    for recipe in MODELS:
        jobs = training_jobs(recipe, data, models, quick)
        for job in jobs:
            shutil.rmtree(job.output, ignore_errors=True)
        seconds[recipe.backend] = 0.0
        for stage, job in enumerate(jobs, start=1):
            name = recipe.backend if len(jobs) == 1 else f"{recipe.backend} (stage {stage}/{len(jobs)})"
            report = run_job(
                job,
                lambda phase, d, t, loss, b=name: progress(f"{b}: {phase}", d, t, loss),
                ModelOptions(device="cpu", dtype="float32"),
            )
            seconds[recipe.backend] += report.seconds
    return seconds


# how the demo reranks: the setting the manifest records and `pixsearch eval --sim-weight` takes
RERANK_K = 16
FUSION = "itm+sim"
SIM_WEIGHT = "logit-scale"
_VAL_KEYS = ("images", "text_to_image", "text_to_image_reranked")
_NOT_SHIPPED = {"train_report.json"}  # wall-clock timings: they differ from run to run


DEMO_RELEVANCE = {
    "background": ["red", "green", "blue", "yellow", "purple", "orange", "circle", "square", "triangle"]
    + ["small", "large", "left", "right", "above", "below"],
    "z_min": 0.3224,
}


def export(models: Path, out: Path) -> dict[str, str]:
    """Copy each trained model's loadable files from `models/<backend>` into `out/<backend>`, the
    weights in float16 (half the bytes; the tiny models score the same); returns {path: sha256}."""
    from safetensors.torch import load_file, save_file

    for backend in BACKENDS:
        source, target = models / backend, out / backend
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for path in sorted(p for p in source.iterdir() if p.is_file() and p.name not in _NOT_SHIPPED):
            if path.suffix == ".safetensors":
                tensors = load_file(path)
                half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
                save_file(half, target / path.name, metadata={"format": "pt"})
            else:
                shutil.copyfile(path, target / path.name)
    # the search relevance calibration of the demo's CLIP: the world's own words as the background, z_min
    # fitted with pixsearch.search.relevance.calibrate on the world's val split (colours and colour-shape
    # phrases); a constant here, so the recipe's output stays byte-for-byte reproducible
    (out / "clip" / CALIBRATION_FILE).write_text(json.dumps(DEMO_RELEVANCE) + "\n")
    return digests(out)


def digests(out: Path) -> dict[str, str]:
    """sha256 of every model file under `out` (the manifest excepted), by path relative to `out`."""
    return {
        path.relative_to(out).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.name != MANIFEST and path.parent != out
    }


def measure(data: Path, models: Path, split: str = "test") -> dict[str, Any]:
    """Text<->image recall on one split of the world, without and with the demo's reranking: what
    `pixsearch eval` reports for `eval_command(data, models, split)`."""
    from pixsearch.evaluation.readers import read_pairs
    from pixsearch.evaluation.run import EvalOptions, evaluate_retrieval
    from pixsearch.models import ModelOptions, Role, create
    from pixsearch.rerank import Fusion
    from pixsearch.rerank.fusion import similarity_weight

    options = ModelOptions(device="cpu", dtype="float32")
    encoder = create(f"clip:{models / 'clip'}", Role.DUAL_ENCODER, options)
    spec = f"blip-itm:{models / 'blip-itm'}"
    eval_options = EvalOptions(
        rerank_k=RERANK_K, fusion=Fusion.parse(FUSION), similarity_weight=similarity_weight(SIM_WEIGHT, encoder)
    )
    pairs = read_pairs(data / "captions.jsonl").only(split)
    return evaluate_retrieval(pairs, encoder, (create(spec, Role.RERANKER, options), spec), eval_options)


def eval_command(data: Path, models: Path, split: str = "test") -> str:
    """The `pixsearch eval` command line that reports the figures `measure` returns."""
    return (
        f"pixsearch eval --data {data / 'captions.jsonl'} --split {split} --model clip:{models / 'clip'} "
        f"--rerank blip-itm:{models / 'blip-itm'} --rerank-k {RERANK_K} --fusion {FUSION} --sim-weight {SIM_WEIGHT}"
    )


def manifest(
    files: dict[str, str], figures: dict[str, Any], seconds: dict[str, float], val: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What `out/manifest.json` records: the recipe, the versions it ran with, the files' digests,
    the demo's rerank settings and the figures measured with them (on test, and text->image on val)."""
    import torch
    import transformers

    return {
        "recipe": {
            "module": __name__,
            "seed": SEED,
            "threads": THREADS,
            "world": asdict(WORLD),
            "models": [{**asdict(recipe), "tiny": asdict(recipe.tiny)} for recipe in MODELS],
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "training_seconds": {backend: round(s, 1) for backend, s in seconds.items()},
        "rerank": {"k": RERANK_K, "fusion": FUSION, "sim_weight": SIM_WEIGHT},
        "measured": figures,
        **({"measured_val": {key: val[key] for key in _VAL_KEYS}} if val else {}),
        "files": files,
    }


def read_manifest(out: Path = PACKAGED) -> dict[str, Any]:
    """The manifest of a folder of demo models (by default the packaged one).

    Raises:
        ModelNotFoundError: no manifest there (the package was installed without its data files).
    """
    from pixsearch.errors import ModelNotFoundError

    path = Path(out) / MANIFEST
    if not path.is_file():
        raise ModelNotFoundError(
            f"no demo models in {path.parent} (missing {MANIFEST}); reinstall pixsearch with its package data, "
            "or train them here with `pixsearch demo --retrain`"
        )
    return json.loads(path.read_text())


def synth_command(data: str = "DATA") -> str:
    """The `pixsearch synth` command line that writes the recipe's world."""
    w = WORLD
    return (
        f"pixsearch synth {data} --seed {w.seed} --train {w.train} --val {w.val} --test {w.test} "
        f"--image-size {w.image_size} --twin-fraction {w.twin_fraction}"
    )


def train_and_export(data: Path, work: Path, out: Path, progress: Progress, quick: bool = False) -> dict[str, Any]:
    """Train the models on the world in `data` into `work/<backend>`, export them into `out` with its
    manifest (returned), the figures measured on the world's test split."""
    seconds = train_models(data, work, progress, quick)
    files = export(work, out)
    figures = measure(data, out)
    figures["commands"] = [synth_command(), eval_command(Path("DATA"), Path("MODELS"))]
    # the split the rerank settings were checked on before the test split (the quick world has none)
    val = None if quick else measure(data, out, "val")
    record = manifest(files, figures, seconds, val)
    (out / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    """`python -m pixsearch.train.demo_recipe [--out DIR] [--work DIR] [--check]`."""
    import argparse
    import tempfile

    import torch

    from pixsearch.synth import write_dataset

    parser = argparse.ArgumentParser(prog="python -m pixsearch.train.demo_recipe", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=PACKAGED, help=f"where the models go (default {PACKAGED})")
    parser.add_argument("--work", type=Path, help="keep the world and the float32 models here (default: a temp dir)")
    parser.add_argument("--check", action="store_true", help="retrain in a temp dir; compare digests with --out's")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory(prefix="pixsearch-demo-recipe-") as temp:
        work = args.work or Path(temp)
        out = Path(temp) / "check" if args.check else args.out
        data = work / "data"
        shutil.rmtree(data, ignore_errors=True)
        write_dataset(data, WORLD)
        record = train_and_export(data, work / "models", out, _log_progress)
        t2i, reranked = record["measured"]["text_to_image"], record["measured"]["text_to_image_reranked"]
        log.info("%s: text->image R@1 %.3f without rerank, %.3f with", out, t2i["R@1"], reranked["R@1"])
        if not args.check:
            return 0
        shipped = read_manifest(args.out)["files"]
        differ = sorted(
            name for name in shipped.keys() | record["files"].keys() if shipped.get(name) != record["files"].get(name)
        )
        for name in differ:
            log.warning("differs: %s", name)
        log.info("identical to the shipped files" if not differ else f"{len(differ)} files differ from {args.out}")
        return 1 if differ else 0


def _log_progress(phase: str, done: int, total: int, loss: float | None) -> None:
    if done == total or done % 100 == 0:
        log.info("%s %d/%d%s", phase, done, total, f" loss {loss:.4f}" if loss is not None else "")


if __name__ == "__main__":
    raise SystemExit(main())
