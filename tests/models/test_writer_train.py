"""A tiny writer trained on (caption, question, candidates -> answer) prompts learns to use the
caption where the VQA model's top answer is wrong, and loads back as `llm:DIR`."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from pixsearch.answering import AnsweringOptions
from pixsearch.evaluation.readers import Question
from pixsearch.evaluation.written import Evidence, evaluate_written, load_evidence, save_evidence
from pixsearch.models import registry
from pixsearch.models.roles import Role
from pixsearch.synth.world import COLOURS
from pixsearch.train.writer_lm import TinyLmConfig
from pixsearch.train.writer_train import COMPACT_TEMPLATE, WriterTrainOptions, encode_example, train_writer


def _evidence(count: int, seed: int) -> list[Evidence]:
    """The caption names the right colour; the VQA model's top answer is always another one."""
    rng, colours = random.Random(seed), list(COLOURS)
    out = []
    for _ in range(count):
        right, wrong = rng.sample(colours, 2)
        question = Question(
            Path("x.png"), "what colour is the circle?", (right,) * 10
        )  # ten agreeing answers, as read_questions makes
        out.append(Evidence(question, f"a small {right} circle", [(wrong, 0.6), (right, 0.3)]))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("trained-writer")
    options = WriterTrainOptions(steps=300, batch_size=16, lr=3e-3, tiny=TinyLmConfig(32, 2, 2, 64))
    return out, train_writer(_evidence(300, seed=1), out, options)


def test_the_prompt_is_masked_out_of_the_loss(tmp_path: Path) -> None:
    from pixsearch.train.writer_lm import build_tiny_lm

    _, tokenizer = build_tiny_lm(tmp_path, ["red", "answer"])
    ids, labels = encode_example(tokenizer, "red answer :", "red")
    assert len(ids) == len(labels)
    answer_at = labels.index(next(label for label in labels if label != -100))
    assert all(label == -100 for label in labels[:answer_at])
    assert labels[answer_at:] == ids[answer_at:] == [tokenizer.convert_tokens_to_ids("red"), tokenizer.sep_token_id]


def test_a_trained_writer_beats_the_vqa_answer(trained: tuple[Path, dict]) -> None:
    out, report = trained
    assert (out / "prompt.txt").read_text(encoding="utf-8") == COMPACT_TEMPLATE
    assert report["examples"] == 300 and report["longest_prompt_tokens"] <= 64
    writer = registry.create(f"llm:{out}", Role.WRITER)
    writer.load()
    options = AnsweringOptions(top_k=3, max_new_tokens=3, template=COMPACT_TEMPLATE)
    result = evaluate_written(_evidence(40, seed=2), writer, options)
    assert result["questions"] == 40
    assert result["vqa_accuracy"] == 0.0 and result["top_k_oracle"] == pytest.approx(1.0)
    assert result["written_accuracy"] > 0.8


def test_evidence_round_trips_through_jsonl(tmp_path: Path) -> None:
    evidence = _evidence(5, seed=3)
    save_evidence(evidence, tmp_path / "evidence.jsonl")
    assert load_evidence(tmp_path / "evidence.jsonl") == evidence
