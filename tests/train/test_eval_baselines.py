"""`pixsearch eval --answerer`: the image-blind baselines a VQA model is compared with."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixsearch.evaluation.readers import Question
from pixsearch.train.cli_eval import answer_baselines


def _q(question: str, *answers: str) -> Question:
    return Question(Path("x.png"), question, answers, "train")


def test_majority_and_question_prior_are_learned_from_the_train_split() -> None:
    train = [
        _q("what colour?", "red"),
        _q("what colour?", "red"),
        _q("what shape?", "square"),
        _q("is it big?", "yes"),
        _q("is it big?", "yes", "no", "yes"),  # a question's own majority answer is its target
    ]
    held_out = [_q("what colour?", "red"), _q("what shape?", "circle"), _q("how many?", "yes")]
    result = answer_baselines(train, held_out)
    assert result["vqa_majority_answer"]["answer"] == "red"  # red and yes two each: the first seen wins
    # majority "red": right once of three (one reference answer scores 1/3 in VQA accuracy)
    assert result["vqa_majority_answer"]["vqa_accuracy"] == pytest.approx((1 / 3) / 3)
    # prior: colour -> red (right), shape -> square (wrong), unseen question -> majority "red" (wrong)
    assert result["vqa_question_prior"]["vqa_accuracy"] == pytest.approx((1 / 3) / 3)
    assert result["vqa_question_prior"]["train_questions"] == 5
    held_out.append(_q("is it big?", "yes"))
    assert answer_baselines(train, held_out)["vqa_question_prior"]["vqa_accuracy"] == pytest.approx((2 / 3) / 4)
