"""Evaluating models on a data set: retrieval recall (with and without reranking), VQA accuracy,
visual-entailment accuracy, caption BLEU-4 and CIDEr. Reranking goes through `RerankService`, as searches do."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixsearch.evaluation.metrics import bleu, cider, rank_matrix, recall_at_k, vqa_accuracy
from pixsearch.evaluation.readers import CaptionSet, QuestionSet
from pixsearch.imageio import load_image
from pixsearch.models.ofa.config import ANSWER_RELATION  # the Entailer role's relation of each answer
from pixsearch.models.roles import Answerer, Captioner, DualEncoder, Entailer, Reranker
from pixsearch.rerank import Fusion, RerankOptions, RerankService
from pixsearch.rerank.fusion import fuse
from pixsearch.search.results import ImageHit, TextHit

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class EvalOptions:
    ks: tuple[int, ...] = (1, 5, 10)
    rerank_k: int = 16
    fusion: Fusion = Fusion.ITM_PLUS_SIMILARITY
    similarity_weight: float = 1.0  # itm+sim: weight of the first-stage similarity (see `rerank.fusion.fuse`)
    # itm+sim: also report recall at each of these weights, from the same reranker scores (choosing a
    # weight on held-out pairs: "rerank_sweep" in the results)
    sweep: tuple[float, ...] = ()
    batch_size: int = 32
    max_pixels: int = 100_000_000


def _silent(_phase: str, _done: int, _total: int) -> None:
    return None


def _images(paths: Sequence[Path], max_pixels: int) -> list[Image.Image]:
    return [load_image(path, max_pixels) for path in paths]


def embed(
    data: CaptionSet, encoder: DualEncoder, options: EvalOptions, progress: Progress = _silent
) -> tuple[np.ndarray, np.ndarray]:
    """(image vectors [n_images, d], text vectors [n_pairs, d]) in the order of `data.images()` and `data.pairs`."""
    images, texts = data.images(), [pair.caption for pair in data.pairs]
    image_rows, text_rows = [], []
    for start in range(0, len(images), options.batch_size):
        batch = images[start : start + options.batch_size]
        image_rows.append(encoder.encode_images(_images(batch, options.max_pixels)))
        progress("embed images", start + len(batch), len(images))
    for start in range(0, len(texts), options.batch_size):
        text_rows.append(encoder.encode_texts(texts[start : start + options.batch_size]))
        progress("embed texts", min(start + options.batch_size, len(texts)), len(texts))
    return np.concatenate(image_rows), np.concatenate(text_rows)


def evaluate_retrieval(
    data: CaptionSet,
    encoder: DualEncoder,
    reranker: tuple[Reranker, str] | None = None,
    options: EvalOptions | None = None,
    progress: Progress = _silent,
) -> dict[str, Any]:
    """Recall@k image->text and text->image over every image and caption of `data`.

    Args:
        data: the pairs; each caption's image is its one relevant image, each image's captions its relevant texts.
        encoder: the dual encoder.
        reranker: (model, spec) to also report recall after reranking the top `options.rerank_k`.

    Returns:
        {"images", "texts", "text_to_image": {"R@1": ...}, "image_to_text": {...}} and, with a reranker,
        "text_to_image_reranked", "image_to_text_reranked", "rerank_k", "fusion" and "similarity_weight".
    """
    options = options or EvalOptions()
    images = data.images()
    if not images:
        raise ValueError("no usable image-caption pairs to evaluate")
    position = {path: j for j, path in enumerate(images)}
    truth_image = [position[pair.image] for pair in data.pairs]
    image_vectors, text_vectors = embed(data, encoder, options, progress)
    similarity = text_vectors @ image_vectors.T  # [texts, images]
    depth = max(max(options.ks), options.rerank_k)
    t2i = rank_matrix(similarity, min(depth, len(images)))
    i2t = rank_matrix(similarity.T, min(depth, len(data.pairs)))
    text_truth = [{j} for j in truth_image]
    image_truth = [{i for i, j in enumerate(truth_image) if j == column} for column in range(len(images))]
    result: dict[str, Any] = {
        "images": len(images),
        "texts": len(data.pairs),
        "text_to_image": _named(recall_at_k(t2i, text_truth, options.ks)),
        "image_to_text": _named(recall_at_k(i2t, image_truth, options.ks)),
    }
    if reranker is not None:
        service = _service(reranker, options)
        t2i_hits = _rerank_t2i(service, data, images, similarity, t2i, options, progress)
        i2t_hits = _rerank_i2t(service, data, images, similarity, i2t, options, progress)
        reranked_t2i = [[hit.image_id for hit in hits] for hits in t2i_hits]
        reranked_i2t = [[hit.text_id for hit in hits] for hits in i2t_hits]
        result["text_to_image_reranked"] = _named(recall_at_k(reranked_t2i, text_truth, options.ks))
        result["image_to_text_reranked"] = _named(recall_at_k(reranked_i2t, image_truth, options.ks))
        if options.sweep:
            result["rerank_sweep"] = {
                f"{weight:g}": {
                    "text_to_image": _named(
                        recall_at_k(_fused_again(t2i_hits, t2i, weight, "image_id"), text_truth, options.ks)
                    ),
                    "image_to_text": _named(
                        recall_at_k(_fused_again(i2t_hits, i2t, weight, "text_id"), image_truth, options.ks)
                    ),
                }
                for weight in options.sweep
            }
        result["rerank_k"] = options.rerank_k
        result["fusion"] = str(options.fusion)
        result["similarity_weight"] = options.similarity_weight
    return result


def _fused_again(
    rankings: list[list[Any]], first_stage: list[list[int]], weight: float, id_field: str
) -> list[list[int]]:
    """Rankings of reranked hits fused again at another itm+sim weight: the reranked top (the hits with
    a rerank score) by ITM score + weight x first-stage score, ties in first-stage order (as the rerank
    service breaks them: equal captions of two photos tie), then the rest."""
    out = []
    for hits, order_before in zip(rankings, first_stage, strict=True):
        position = {item: rank for rank, item in enumerate(order_before)}
        top = [hit for hit in hits if hit.rerank_score is not None]
        rest = [hit for hit in hits if hit.rerank_score is None]
        top.sort(key=lambda hit: position[getattr(hit, id_field)])
        itm = np.asarray([hit.rerank_score for hit in top], dtype=np.float32)
        first = np.asarray([hit.first_stage_score for hit in top], dtype=np.float32)
        order = np.argsort(-fuse(itm, first, Fusion.ITM_PLUS_SIMILARITY, weight), kind="stable")
        out.append([getattr(top[i], id_field) for i in order] + [getattr(hit, id_field) for hit in rest])
    return out


def _named(recalls: dict[int, float]) -> dict[str, float]:
    return {f"R@{k}": value for k, value in recalls.items()}


def _service(reranker: tuple[Reranker, str], options: EvalOptions) -> RerankService:
    model, spec = reranker
    rerank_options = RerankOptions(
        k=options.rerank_k,
        fusion=options.fusion,
        similarity_weight=options.similarity_weight,
        max_pixels=options.max_pixels,
    )
    # no disk cache, so the root is never written to
    return RerankService(model, spec, Path(tempfile.gettempdir()), rerank_options)


def _rerank_t2i(service, data, images, similarity, rankings, options, progress) -> list[list[ImageHit]]:
    out = []
    for i, (pair, ranking) in enumerate(zip(data.pairs, rankings, strict=True)):
        hits = [
            ImageHit(j, str(images[j]), float(similarity[i, j]), 0, 0, content_hash=str(images[j])) for j in ranking
        ]
        out.append(service.rerank_images(pair.caption, hits, options.rerank_k))
        progress("rerank text->image", i + 1, len(data.pairs))
    return out


def _rerank_i2t(service, data, images, similarity, rankings, options, progress) -> list[list[TextHit]]:
    out = []
    for j, (path, ranking) in enumerate(zip(images, rankings, strict=True)):
        hits = [TextHit(i, data.pairs[i].caption, "eval", float(similarity[i, j])) for i in ranking]
        image = load_image(path, options.max_pixels)
        out.append(service.rerank_texts(image, hits, options.rerank_k))
        progress("rerank image->text", j + 1, len(images))
    return out


def evaluate_vqa(questions: QuestionSet, answerer: Answerer, progress: Progress = _silent) -> dict[str, Any]:
    """VQAv2 soft accuracy of the answerer's top answer, over every question."""
    scores = []
    for n, question in enumerate(questions.questions, start=1):
        answers = answerer.answer(load_image(question.image), question.question, top_k=1)
        scores.append(vqa_accuracy(answers[0][0] if answers else "", question.answers))
        progress("vqa", n, len(questions.questions))
    return {"questions": len(scores), "vqa_accuracy": float(np.mean(scores)) if scores else 0.0}


def evaluate_entailment(statements: QuestionSet, entailer: Entailer, progress: Progress = _silent) -> dict[str, Any]:
    """Accuracy of the entailer's most probable relation, over every statement (read by
    `readers.read_statements`: the statement as the question, yes / no / maybe as its answer),
    and per true answer."""
    right: dict[str, list[bool]] = {}
    for n, statement in enumerate(statements.questions, start=1):
        probs = entailer.judge(load_image(statement.image), statement.question)
        truth = statement.answers[0]
        right.setdefault(truth, []).append(max(probs, key=probs.__getitem__) == ANSWER_RELATION[truth])
        progress("entailment", n, len(statements.questions))
    every = [hit for hits in right.values() for hit in hits]
    return {
        "statements": len(every),
        "ve_accuracy": float(np.mean(every)) if every else 0.0,
        "accuracy_by_answer": {answer: float(np.mean(hits)) for answer, hits in sorted(right.items())},
    }


def evaluate_captions(
    data: CaptionSet, captioner: Captioner, batch_size: int = 16, progress: Progress = _silent
) -> dict[str, Any]:
    """BLEU-4 and CIDEr(-D) of one generated caption per image against that image's captions."""
    grouped = data.captions_by_image()
    images = list(grouped)
    generated: list[str] = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        generated.extend(captioner.caption([load_image(path) for path in batch]))
        progress("caption", start + len(batch), len(images))
    references = [grouped[path] for path in images]
    return {
        "captioned_images": len(images),
        "bleu4": bleu(generated, references),
        "cider": cider(generated, references),
        "examples": [{"image": str(p), "caption": c} for p, c in list(zip(images, generated, strict=True))[:5]],
    }
