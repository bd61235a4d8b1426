"""The `pixsearch synth`, `train`, `eval` and `demo` commands: parsers and handlers.

`register(subparsers)` adds the four commands; each sets `handler` (args, settings) -> exit code.
Long work shows tqdm bars on stderr; results go to stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pixsearch.cli import add_common_options, print_json
from pixsearch.evaluation.readers import BadRowPolicy
from pixsearch.settings import Settings


class Bars:
    """One tqdm bar per phase; the training bar shows the loss."""

    def __init__(self) -> None:
        self.bars: dict[str, tqdm] = {}

    def __call__(self, phase: str, done: int, total: int, loss: float | None = None) -> None:
        bar = self.bars.get(phase)
        if bar is None:
            bar = self.bars[phase] = tqdm(total=total or None, desc=phase, file=sys.stderr, dynamic_ncols=True)
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def register(subparsers: Any) -> None:
    """Add `synth`, `train`, `eval` and `demo` to the `pixsearch` command's subparsers."""
    _synth_parser(subparsers.add_parser("synth", help="generate a synthetic data set of coloured shapes"))
    _train_parser(subparsers.add_parser("train", help="train or fine-tune a model on image-caption pairs"))
    _eval_parser(
        subparsers.add_parser("eval", help="recall, VQA and entailment accuracy, BLEU-4 and CIDEr on a data set")
    )
    _demo_parser(subparsers.add_parser("demo", help="offline demo: synthetic library, packaged tiny models, web UI"))


def _synth_parser(parser: argparse.ArgumentParser) -> None:
    add_common_options(parser)
    parser.add_argument("output", type=Path, help="folder to write the data set into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=1000, help="scenes in the train split")
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=64, help="pixels a side")
    parser.add_argument("--twin-fraction", type=float, default=0.25, help="share of scenes with a swapped twin")
    parser.set_defaults(handler=run_synth)


def _train_parser(parser: argparse.ArgumentParser) -> None:
    from pixsearch.train.native import NATIVE_TRAINABLE
    from pixsearch.train.tasks import TRAINABLE

    add_common_options(parser)
    parser.add_argument("backend", choices=[*TRAINABLE, *NATIVE_TRAINABLE])
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="captions (.json Karpathy, .csv, .jsonl); VQA: questions .jsonl; ofa-ve: statements .jsonl / .csv",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (the publisher's layout); load it as BACKEND:OUT"
    )
    parser.add_argument("--init", help="checkpoint to fine-tune (folder or hub id); default: a tiny model from scratch")
    parser.add_argument("--images", type=Path, help="image root (default: the data file's folder)")
    parser.add_argument("--split", default="train", help="train on this split ('all' for every row)")
    parser.add_argument(
        "--bad-rows",
        choices=[p.value for p in BadRowPolicy],
        default="skip",
        help="skip bad rows (named) or stop before training",
    )
    parser.add_argument("--miner", help="blip-itm, mplug-itm: dual encoder spec that mines hard negatives")
    parser.add_argument(
        "--negatives",
        type=Path,
        help="blip-itm, vle-itm, mplug-itm: captions false of the images (.csv / .jsonl, columns image and "
        "negative), e.g. swapped attributes",
    )
    parser.add_argument(
        "--image-ranked",
        type=int,
        default=0,
        help="blip-itm with --miner: also rank each caption's image against this many of the images the miner "
        "confuses it with (the reranker's job at search time; the demo's reranker uses 3 in a second stage)",
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUT holds a checkpoint")
    parser.add_argument("--tiny-image-size", type=int, default=32)
    parser.add_argument("--tiny-hidden", type=int, default=64)
    parser.add_argument("--tiny-layers", type=int, default=2)
    parser.add_argument("--tiny-patch", type=int, default=4, help="patch size of a tiny vision tower, in pixels")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.set_defaults(handler=run_train)


def _eval_parser(parser: argparse.ArgumentParser) -> None:
    add_common_options(parser)
    parser.add_argument("--data", type=Path, help="captions (.json Karpathy, .csv, .jsonl)")
    parser.add_argument("--images", type=Path, help="image root (default: the data file's folder)")
    parser.add_argument("--split", default="test", help="evaluate this split ('all' for every row)")
    parser.add_argument("--model", help="dual encoder spec for retrieval")
    parser.add_argument("--rerank", metavar="SPEC", help="also report recall after reranking with this model")
    parser.add_argument("--rerank-k", type=int, default=16)
    parser.add_argument("--fusion", choices=["itm+sim", "itm"], default="itm+sim")
    parser.add_argument(
        "--sim-weight",
        default="auto",
        help="itm+sim: weight of the first-stage similarity: a number, 'logit-scale' (the dual encoder's, so both "
        "terms are logits) or 'auto' (the logit scale where the dual encoder has one, else 1 as LAVIS)",
    )
    parser.add_argument(
        "--sweep-sim-weights",
        metavar="W,W,...",
        help="itm+sim: also report recall at each of these weights (numbers or 'logit-scale'), from the same "
        "reranker scores; run it on a held-out split to choose --sim-weight for search",
    )
    parser.add_argument("--questions", type=Path, help="questions .jsonl for VQA accuracy")
    parser.add_argument("--answerer", metavar="SPEC", help="VQA model")
    parser.add_argument("--captioner", metavar="SPEC", help="captioning model (BLEU-4, CIDEr against --data)")
    parser.add_argument(
        "--statements", type=Path, help="statements .jsonl / .csv (image, statement, label yes/no/maybe) for --entailer"
    )
    parser.add_argument("--entailer", metavar="SPEC", help="visual entailment model (accuracy on --statements)")
    parser.add_argument(
        "--llm", metavar="SPEC", help="with --answerer and --captioner: also score answers this language model writes"
    )
    parser.add_argument("--prompt-file", type=Path, help="--llm: the prompt template (default: the built-in one)")
    parser.add_argument("--llm-top-k", type=int, default=3, help="--llm: VQA answers put in the prompt")
    parser.add_argument("--llm-max-new-tokens", type=int, default=4, help="--llm: longest written answer, in tokens")
    parser.add_argument("--bad-rows", choices=[p.value for p in BadRowPolicy], default="skip")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.set_defaults(handler=run_eval)


def _demo_parser(parser: argparse.ArgumentParser) -> None:
    add_common_options(parser)
    parser.add_argument("--dir", type=Path, help="where the demo keeps its data and models (default: user cache)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-serve", action="store_true", help="build everything, print the URL, do not serve")
    parser.add_argument(
        "--retrain", action="store_true", help="train the demo models here (minutes) instead of using the packaged ones"
    )
    parser.add_argument("--quick", action="store_true", help="a small library (with --retrain: a few steps; for tests)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default 1: the models are tiny)")
    parser.set_defaults(handler=run_demo)


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def run_synth(args: argparse.Namespace, settings: Settings) -> int:
    from pixsearch.synth import SynthOptions, write_dataset

    options = SynthOptions(args.seed, args.train, args.val, args.test, args.image_size, args.twin_fraction)
    bars = Bars()
    try:
        report = write_dataset(args.output, options, lambda done, total: bars("images", done, total))
    finally:
        bars.close()
    print(
        f"{report.images} images ({report.twins} twins), {report.captions} captions, {report.questions} questions in {report.root}"
    )
    for name in report.files.values():
        print(f"  {report.root / name}")
    return 0


def run_train(args: argparse.Namespace, settings: Settings) -> int:
    from pixsearch.models.spec import ModelOptions
    from pixsearch.train.loop import TrainOptions
    from pixsearch.train.run import TrainJob, run_job
    from pixsearch.train.tiny import TinyConfig

    _threads(args)
    job = TrainJob(
        backend=args.backend,
        data=args.data,
        output=args.out,
        init=args.init,
        tiny=TinyConfig(
            image_size=args.tiny_image_size,
            patch_size=args.tiny_patch,
            hidden=args.tiny_hidden,
            layers=args.tiny_layers,
        ),
        image_root=args.images,
        split=None if args.split == "all" else args.split,
        policy=BadRowPolicy(args.bad_rows),
        batch_size=args.batch_size,
        seed=args.seed,
        miner=args.miner,
        negatives=args.negatives,
        image_ranked=args.image_ranked,
        options=TrainOptions(
            steps=args.steps, lr=args.lr, checkpoint_every=args.checkpoint_every, resume=not args.no_resume
        ),
    )
    bars = Bars()
    try:
        report = run_job(job, bars, ModelOptions(device=settings.device, dtype="float32"))
    finally:
        bars.close()
    resumed = f", resumed at step {report.resumed_from}" if report.resumed_from else ""
    print(
        f"trained {report.backend} for {report.steps} steps{resumed} in {report.seconds:.1f}s "
        f"({report.items_per_second:.1f} items/s), final loss {report.final_loss:.4f}"
    )
    print(f"load it as {report.backend}:{report.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The `pixsearch` command (these commands are registered in its parser)."""
    from pixsearch.cli import main as pixsearch_main

    return pixsearch_main(argv)


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    from pixsearch.train.cli_eval import evaluate

    _threads(args)
    results = evaluate(args, settings, Bars())
    from pixsearch.evaluation.report import format_table, write_json

    print(format_table(results))
    if args.json:
        write_json(args.json, results)
        print(f"results written to {args.json}")
    return 0


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    from pixsearch.train.demo import DemoOptions, default_demo_dir, plan, prepare_demo, serve_demo

    options = DemoOptions(root=args.dir or default_demo_dir(), retrain=args.retrain, quick=args.quick)
    print(f"{plan(options)}, then serving it at http://{args.host}:{args.port}/", flush=True)
    import torch

    from pixsearch.train.demo_recipe import THREADS

    # One thread unless told: the recipe trains with it (the packaged models' bytes), and for models this
    # small a second thread only adds OpenMP synchronisation (measured: start 3x slower on a busy 2-core box).
    torch.set_num_threads(args.threads or THREADS)
    _quiet_transformers()
    bars = Bars()
    try:
        demo = prepare_demo(options, settings, bars)
    finally:
        bars.close()
    for line in demo.summary():
        print(line)
    url = f"http://{args.host}:{args.port}/"
    if args.no_serve:
        print(f"ready; `pixsearch demo` without --no-serve serves it at {url}")
        print_json(demo.to_json())
        return 0
    print(f"serving the demo at {url} (Ctrl-C stops)", flush=True)
    serve_demo(demo, settings, args.host, args.port)
    return 0


def _quiet_transformers() -> None:
    """The demo's tiny models load one tower at a time from a full checkpoint; transformers would
    print the other tower's weights as unexpected, which is expected here."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
