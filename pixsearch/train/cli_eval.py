"""`pixsearch eval`: read the data, build the models the arguments name, run the evaluations."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from pixsearch.errors import ConfigError
from pixsearch.evaluation.metrics import vqa_accuracy
from pixsearch.evaluation.readers import (
    BadRowPolicy,
    Question,
    enforce,
    read_pairs,
    read_questions,
    read_statements,
)
from pixsearch.evaluation.run import (
    EvalOptions,
    evaluate_captions,
    evaluate_entailment,
    evaluate_retrieval,
    evaluate_vqa,
)
from pixsearch.models import ModelOptions, Role, create
from pixsearch.rerank import Fusion, similarity_weight
from pixsearch.settings import Settings


def evaluate(args: argparse.Namespace, settings: Settings, bars: Any) -> dict[str, Any]:
    """Every evaluation the arguments ask for, as one results dict.

    Raises:
        ConfigError: nothing to evaluate, or a model without the data it needs.
        DataSetError: bad rows under --bad-rows stop.
    """
    if not (args.model or args.captioner or args.answerer or args.entailer):
        raise ConfigError("name something to evaluate: --model (retrieval), --captioner, --answerer or --entailer")
    if args.llm and not (args.answerer and args.captioner):
        raise ConfigError("--llm writes answers from a caption and VQA answers: it needs --answerer and --captioner")
    policy = BadRowPolicy(args.bad_rows)
    split = None if args.split == "all" else args.split
    options = ModelOptions(device=settings.device, dtype=settings.dtype)
    progress = lambda phase, done, total: bars(phase, done, total)  # noqa: E731
    results: dict[str, Any] = {"split": args.split}
    try:
        if args.model or (args.captioner and not args.llm) or args.data:
            if not args.data:
                raise ConfigError("--model and --captioner need --data (captions)")
            data = read_pairs(args.data, args.images)
            enforce(data.bad, policy, str(args.data))
            data = data.only(split)
            results["skipped_rows"] = [str(row) for row in data.bad]
            if not data.pairs:
                raise ConfigError(f"{args.data}: no usable pairs in split {args.split!r}")
        if args.model:
            encoder = create(args.model, Role.DUAL_ENCODER, options)
            reranker = (create(args.rerank, Role.RERANKER, options), args.rerank) if args.rerank else None
            eval_options = EvalOptions(
                rerank_k=args.rerank_k,
                fusion=Fusion.parse(args.fusion),
                similarity_weight=similarity_weight(args.sim_weight, encoder) if args.rerank else 1.0,
                max_pixels=settings.max_pixels,
                sweep=_sweep(args, encoder),
            )
            retrieval = evaluate_retrieval(data, encoder, reranker, eval_options, progress)
            retrieval["chance R@1 text_to_image"] = 1 / retrieval["images"]
            results["retrieval"] = retrieval
        if args.captioner and args.data:
            results["captioning"] = evaluate_captions(
                data, create(args.captioner, Role.CAPTIONER, options), progress=progress
            )
        if args.answerer:
            results |= _answering(args, policy, split, options, progress)
        if args.entailer:
            results["entailment"] = _entailment(args, policy, split, options, progress)
    finally:
        bars.close()
    return results


def _sweep(args: argparse.Namespace, encoder: Any) -> tuple[float, ...]:
    """The weights of --sweep-sim-weights, each checked as --sim-weight is.

    Raises:
        ConfigError: a weight that is not one, or a sweep without a reranker or with --fusion itm.
    """
    text = getattr(args, "sweep_sim_weights", None)
    if not text:
        return ()
    if not args.rerank or args.fusion != "itm+sim":
        raise ConfigError("--sweep-sim-weights compares itm+sim weights: it needs --rerank and --fusion itm+sim")
    tokens = [token.strip() for token in text.split(",") if token.strip()]
    if not tokens:
        raise ConfigError(f"--sweep-sim-weights {text!r} names no weight")
    try:
        return tuple(dict.fromkeys(similarity_weight(token, encoder) for token in tokens))
    except ConfigError as error:
        raise ConfigError(f"--sweep-sim-weights: {error}") from None


def _answering(
    args: argparse.Namespace, policy: BadRowPolicy, split: str | None, options: ModelOptions, progress: Any
) -> dict[str, Any]:
    """VQA accuracy of --answerer on --questions, the image-blind baselines learned from the train
    split (when another split is evaluated), and with --llm the written answers' accuracy."""
    if not args.questions:
        raise ConfigError("--answerer needs --questions FILE")
    questions = read_questions(args.questions, args.images)
    enforce(questions.bad, policy, str(args.questions))
    train = [q for q in questions.questions if q.split == "train"] if split not in (None, "train") else []
    questions.questions = [q for q in questions.questions if split is None or q.split in (None, split)]
    answerer = create(args.answerer, Role.ANSWERER, options)
    results = {"vqa": evaluate_vqa(questions, answerer, progress)}
    if train:
        results |= answer_baselines(train, questions.questions)
    if args.llm:
        results["vqa_llm"] = _written(args, questions.questions, answerer, options, progress)
    return results


def answer_baselines(train: list[Question], questions: list[Question]) -> dict[str, Any]:
    """VQA accuracy of two answerers that never look at the image, learned from the training split:
    the most common answer (majority), and for each question its most common training answer (the
    question's prior; the majority for questions never seen). A model that reads the image beats both.
    """
    target = [max(q.answers, key=q.answers.count) for q in train]  # a question's own majority answer
    majority = Counter(target).most_common(1)[0][0]
    by_question: dict[str, Counter] = {}
    for question, answer in zip(train, target, strict=True):
        by_question.setdefault(question.question, Counter())[answer] += 1

    def prior(question: Question) -> str:
        seen = by_question.get(question.question)
        return seen.most_common(1)[0][0] if seen else majority

    def accuracy(answer_of: Callable[[Question], str]) -> float:
        return float(np.mean([vqa_accuracy(answer_of(q), q.answers) for q in questions])) if questions else 0.0

    return {
        "vqa_majority_answer": {"answer": majority, "vqa_accuracy": accuracy(lambda _: majority)},
        "vqa_question_prior": {"vqa_accuracy": accuracy(prior), "train_questions": len(train)},
    }


def _written(args: argparse.Namespace, questions: list, answerer: Any, options: ModelOptions, progress: Any) -> dict:
    """Accuracy of the answers a language model writes from the caption and the top VQA answers."""
    from pixsearch.answering import DEFAULT_TEMPLATE, AnsweringOptions, read_template
    from pixsearch.evaluation.written import evaluate_written, gather

    template = read_template(args.prompt_file) if args.prompt_file else DEFAULT_TEMPLATE
    answering = AnsweringOptions(top_k=args.llm_top_k, max_new_tokens=args.llm_max_new_tokens, template=template)
    captioner = create(args.captioner, Role.CAPTIONER, options)
    evidence = gather(questions, answerer, captioner, answering.top_k, progress)
    result = evaluate_written(evidence, create(args.llm, Role.WRITER, options), answering, progress)
    return result | {"llm": args.llm, "captioner": args.captioner}


def _entailment(args: argparse.Namespace, policy: BadRowPolicy, split: str | None, options: ModelOptions, progress):
    """Visual-entailment accuracy of --entailer on --statements."""
    if not args.statements:
        raise ConfigError("--entailer needs --statements FILE")
    statements = read_statements(args.statements, args.images)
    enforce(statements.bad, policy, str(args.statements))
    statements.questions = [s for s in statements.questions if split is None or s.split in (None, split)]
    if not statements.questions:
        raise ConfigError(f"{args.statements}: no usable statements in split {args.split!r}")
    result = evaluate_entailment(statements, create(args.entailer, Role.ENTAILER, options), progress)
    return result | {"skipped_rows": [str(row) for row in statements.bad]}
