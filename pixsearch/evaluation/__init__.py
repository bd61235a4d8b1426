"""Evaluation: data-set readers, retrieval / VQA / captioning metrics, reports."""

from __future__ import annotations

from pixsearch.evaluation.metrics import bleu, cider, normalise_answer, recall_at_k, vqa_accuracy
from pixsearch.evaluation.readers import (
    BadRow,
    BadRowPolicy,
    CaptionSet,
    DataSetError,
    Pair,
    Question,
    QuestionSet,
    enforce,
    read_pairs,
    read_questions,
)

__all__ = [
    "BadRow",
    "BadRowPolicy",
    "CaptionSet",
    "DataSetError",
    "Pair",
    "Question",
    "QuestionSet",
    "bleu",
    "cider",
    "enforce",
    "normalise_answer",
    "read_pairs",
    "read_questions",
    "recall_at_k",
    "vqa_accuracy",
]
