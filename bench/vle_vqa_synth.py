"""A tiny VLE VQA trained from random init on the synthetic world (`pixsearch train vle-vqa` without
--init), scored on the held-out test questions against two baselines measured in the same run: the
starting point (the random model training began from) and the majority answer of the train split.

    nice -n 10 python bench/vle_vqa_synth.py [--steps 400] [--out /tmp/vle-vqa-synth]

The same with the commands:
    pixsearch synth W --train 400 --val 0 --test 100 --image-size 32
    pixsearch train vle-vqa --data W/questions.jsonl --out M --steps 400 --batch-size 32 --lr 1e-3 \\
        --tiny-hidden 64 --tiny-patch 8 --threads 1
    pixsearch eval --questions W/questions.jsonl --answerer vle-vqa:M --split test        (and vle-vqa:M/init)
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import torch
from cli_help import cpu_model

from pixsearch.evaluation.metrics import vqa_accuracy
from pixsearch.evaluation.readers import read_questions
from pixsearch.evaluation.run import evaluate_vqa
from pixsearch.models import Role, create
from pixsearch.synth import SynthOptions, write_dataset
from pixsearch.train import TinyConfig, TrainJob, TrainOptions, run_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path("/tmp/vle-vqa-synth"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    world, model = args.out / "world", args.out / "model"
    if not (world / "questions.jsonl").exists():
        write_dataset(world, SynthOptions(seed=0, train=400, val=0, test=100, image_size=32))
    questions = read_questions(world / "questions.jsonl")
    train = [q for q in questions.questions if q.split == "train"]
    questions.questions = [q for q in questions.questions if q.split == "test"]
    majority = Counter(q.answers[0] for q in train).most_common(1)[0][0]
    baseline = sum(vqa_accuracy(majority, q.answers) for q in questions.questions) / len(questions.questions)

    options = TrainOptions(steps=args.steps, lr=1e-3, warmup=50, checkpoint_every=10**9, log_every=100)
    tiny = TinyConfig(image_size=32, patch_size=8, hidden=64, layers=2, heads=4)
    started = time.perf_counter()
    run_job(TrainJob("vle-vqa", world / "questions.jsonl", model, tiny=tiny, batch_size=32, options=options))
    seconds = time.perf_counter() - started
    scores = {
        f"majority answer ({majority!r})": baseline,
        "starting point (random init)": evaluate_vqa(questions, create(f"vle-vqa:{model / 'init'}"))["vqa_accuracy"],
        f"trained {args.steps} steps": evaluate_vqa(questions, create(f"vle-vqa:{model}", Role.ANSWERER))[
            "vqa_accuracy"
        ],
    }
    print(f"{cpu_model()}, 1 thread; {len(train)} train / {len(questions.questions)} test questions")
    print(f"training: {seconds:.0f} s")
    for name, score in scores.items():
        print(f"{name:32s} VQA accuracy {100 * score:6.2f} %  {score / baseline:5.2f}x majority")


if __name__ == "__main__":
    main()
