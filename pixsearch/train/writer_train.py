"""Train a tiny writer (causal LM) to answer from (caption, question, VQA candidates) prompts.

The prompts are built from what the project's own captioner and VQA model say about photos of the
synthetic world (a split they were not trained on, so their mistakes look like those on new photos);
the target is the world's own answer. The loss covers the answer tokens only. The result loads as
`llm:OUT`, with its prompt template saved as OUT/prompt.txt (pass it with --prompt-file).

    python -m pixsearch.train.writer_train --questions world/questions.jsonl --split val \\
        --answerer blip-vqa:VQA --captioner blip-caption:CAP --out LM --steps 1500
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pixsearch.answering import AnsweringOptions, build_prompt, check_template
from pixsearch.evaluation.written import Evidence
from pixsearch.synth.world import vocabulary
from pixsearch.train.writer_lm import TinyLmConfig, build_tiny_lm

log = logging.getLogger(__name__)

# short, so a tiny model spends its positions on the evidence rather than on instructions
COMPACT_TEMPLATE = "caption : {caption}\nquestion : {question}\ncandidates :\n{candidates}\nanswer :"


@dataclass(frozen=True)
class WriterTrainOptions:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    top_k: int = 3
    template: str = COMPACT_TEMPLATE
    tiny: TinyLmConfig = TinyLmConfig(hidden=64, layers=2, heads=2, positions=128)


def prompt_words(template: str) -> list[str]:
    """The world's words, the template's, and every two-digit number (probabilities are 0.NN)."""
    return vocabulary() + template.replace("{", " ").replace("}", " ").split() + [f"{i:02d}" for i in range(100)]


def encode_example(tokenizer: Any, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(input ids, labels): the prompt as `CausalLmWriter.encode` feeds it, then the answer and [SEP]."""
    ids = tokenizer(prompt)["input_ids"]
    if ids and ids[-1] == tokenizer.sep_token_id:
        ids = ids[:-1]
    target = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
    return ids + target, [-100] * len(ids) + target


def _batch(examples: Sequence[tuple[list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, target) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(target)] = torch.tensor(target)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def train_writer(evidence: Sequence[Evidence], out: Path, options: WriterTrainOptions) -> dict[str, Any]:
    """Train from scratch on `evidence` (target: each question's first answer); save to `out`."""
    check_template(options.template)
    out = Path(out)
    model, tokenizer = build_tiny_lm(out, prompt_words(options.template), options.tiny, options.seed)
    prompting = AnsweringOptions(top_k=options.top_k, template=options.template)
    examples = [
        encode_example(
            tokenizer, build_prompt(e.caption, e.question.question, e.candidates, prompting), e.question.answers[0]
        )
        for e in evidence
    ]
    longest = max(len(ids) for ids, _ in examples)
    if longest > options.tiny.positions:
        raise ValueError(f"a training prompt has {longest} tokens; the model has {options.tiny.positions} positions")
    generator = random.Random(options.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, options.lr, total_steps=options.steps, pct_start=0.1)
    model.train()
    started, loss = time.perf_counter(), torch.tensor(0.0)
    for step in range(options.steps):
        batch = _batch(generator.sample(examples, min(options.batch_size, len(examples))), tokenizer.pad_token_id)
        loss = model(**batch).loss
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if step % 100 == 0:
            log.info("step %d loss %.4f", step, loss.item())
    model.eval()
    model.save_pretrained(out)
    (out / "prompt.txt").write_text(options.template, encoding="utf-8")
    return {"examples": len(examples), "steps": options.steps, "seconds": time.perf_counter() - started,
            "final_loss": float(loss.item()), "longest_prompt_tokens": longest}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    from pixsearch.evaluation.readers import read_questions
    from pixsearch.evaluation.written import gather, load_evidence, save_evidence
    from pixsearch.models import Role, create

    parser = argparse.ArgumentParser(description="train a tiny writer LM on the synthetic world's questions")
    parser.add_argument("--questions", type=Path, required=True)
    parser.add_argument("--images", type=Path)
    parser.add_argument("--split", default="val", help="the split to train on (one the VQA model was not trained on)")
    parser.add_argument("--answerer", required=True)
    parser.add_argument("--captioner", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--evidence", type=Path, help="JSONL cache of the captions and VQA answers (made if missing)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tiny = TinyLmConfig(hidden=args.hidden, layers=args.layers, heads=2, positions=128)
    options = WriterTrainOptions(steps=args.steps, tiny=tiny)
    started = time.perf_counter()
    if args.evidence is not None and args.evidence.exists():
        evidence = load_evidence(args.evidence)
    else:
        questions = [q for q in read_questions(args.questions, args.images).questions if q.split == args.split]
        answerer, captioner = create(args.answerer, Role.ANSWERER), create(args.captioner, Role.CAPTIONER)
        answerer.load()
        captioner.load()
        evidence = gather(questions, answerer, captioner, options.top_k)
        if args.evidence is not None:
            save_evidence(evidence, args.evidence)
    report = train_writer(evidence, args.out, options) | {"evidence_seconds": time.perf_counter() - started}
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("%s\n(also in %s)", json.dumps(report, indent=2), args.out / "report.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
