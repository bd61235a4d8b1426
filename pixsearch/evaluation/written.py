"""Answer accuracy of "VQA + LLM" against the bare VQA model, on the same questions.

For each question the evidence a writer gets is gathered once (the captioner's caption of the photo,
the VQA model's top-k answers); the bare VQA answer is the top candidate, the written one is the
writer's completion of the prompt. Both are scored with VQAv2 soft accuracy.

    python -m pixsearch.evaluation.written --questions world/questions.jsonl --split test \\
        --answerer blip-vqa:VQA --captioner blip-caption:CAP --llm llm:LM --prompt-file LM/prompt.txt
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixsearch.answering import AnsweringOptions, build_prompt, final_answer
from pixsearch.evaluation.metrics import vqa_accuracy
from pixsearch.evaluation.readers import Question
from pixsearch.imageio import load_image
from pixsearch.models.roles import Answerer, Captioner, Writer

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Evidence:
    question: Question
    caption: str
    candidates: list[tuple[str, float]]


def _silent(_phase: str, _done: int, _total: int) -> None:
    return None


def gather(
    questions: Sequence[Question], answerer: Answerer, captioner: Captioner, top_k: int, progress: Progress = _silent
) -> list[Evidence]:
    """The caption (one per photo) and the top-k VQA answers of every question."""
    captions: dict[Path, str] = {}
    out = []
    for n, question in enumerate(questions, start=1):
        image = load_image(question.image)
        if question.image not in captions:
            captions[question.image] = captioner.caption([image])[0]
        out.append(Evidence(question, captions[question.image], answerer.answer(image, question.question, top_k)))
        progress("evidence", n, len(questions))
    return out


def save_evidence(evidence: Sequence[Evidence], path: Path) -> None:
    """Write evidence as JSONL, so a writer can be trained or evaluated again without the vision models."""
    with open(path, "w", encoding="utf-8") as out:
        for item in evidence:
            q = item.question
            row = {"image": str(q.image), "question": q.question, "answers": list(q.answers), "split": q.split,
                   "caption": item.caption, "candidates": item.candidates}  # fmt: skip
            out.write(json.dumps(row) + "\n")


def load_evidence(path: Path) -> list[Evidence]:
    """Evidence written by `save_evidence`."""
    out = []
    with open(path, encoding="utf-8") as rows:
        for line in rows:
            row = json.loads(line)
            question = Question(Path(row["image"]), row["question"], tuple(row["answers"]), row["split"])
            out.append(Evidence(question, row["caption"], [(a, float(p)) for a, p in row["candidates"]]))
    return out


def evaluate_written(
    evidence: Sequence[Evidence], writer: Writer, options: AnsweringOptions, progress: Progress = _silent
) -> dict[str, Any]:
    """{"questions", "vqa_accuracy" (bare top answer), "written_accuracy", "top_k_oracle", "by_kind", "examples"}."""
    bare, written, oracle, rows = [], [], [], []
    kinds: dict[str, list[tuple[float, float]]] = {}
    for n, item in enumerate(evidence, start=1):
        truth = item.question.answers
        prompt = build_prompt(item.caption, item.question.question, item.candidates, options)
        answer = final_answer(writer.write(prompt, options.max_new_tokens, options.timeout_s), item.candidates)
        top = item.candidates[0][0] if item.candidates else ""
        bare.append(vqa_accuracy(top, truth))
        written.append(vqa_accuracy(answer, truth))
        oracle.append(max((vqa_accuracy(a, truth) for a, _ in item.candidates), default=0.0))
        kinds.setdefault(" ".join(item.question.question.split()[:2]), []).append((bare[-1], written[-1]))
        if len(rows) < 8 and bare[-1] != written[-1]:
            rows.append({"question": item.question.question, "caption": item.caption, "vqa": top, "written": answer})
        progress("write", n, len(evidence))
    return {
        "questions": len(bare),
        "vqa_accuracy": float(np.mean(bare)) if bare else 0.0,
        "written_accuracy": float(np.mean(written)) if written else 0.0,
        "top_k_oracle": float(np.mean(oracle)) if oracle else 0.0,
        "by_kind": {
            kind: {"n": len(v), "vqa": float(np.mean([b for b, _ in v])), "written": float(np.mean([w for _, w in v]))}
            for kind, v in sorted(kinds.items())
        },
        "examples": rows,
    }
