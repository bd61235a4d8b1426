"""Training data: image-caption (or question-answer) rows checked and decoded before training starts.

Every image is decoded and preprocessed once, up front: a row whose file is missing or does not
decode is found then (named by file and line) and either left out or the run refused, by the
data-set policy; training itself never meets an unreadable image half-way through an epoch.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pixsearch.errors import BadImageError, ConfigError
from pixsearch.evaluation.readers import (
    BadRow,
    BadRowPolicy,
    QuestionSet,
    enforce,
    read_negatives,
    read_pairs,
    read_questions,
    read_statements,
)
from pixsearch.imageio import DEFAULT_MAX_PIXELS, load_image
from pixsearch.models.preprocess import ImageTransform, apply_transform

log = logging.getLogger(__name__)

DecodeProgress = Callable[[int, int], None]


@dataclass
class TrainData:
    """Images with their preprocessed pixels and, per image, its captions or (question, answer) pairs."""

    images: list[Path]
    pixels: npt.NDArray[np.float32]  # [n, 3, H, W]
    captions: list[list[str]] = field(default_factory=list)
    qa: list[list[tuple[str, str]]] = field(default_factory=list)
    negatives: list[list[tuple[str, str]]] = field(default_factory=list)  # per image: (true caption, false edit)
    skipped: list[BadRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def texts(self) -> list[str]:
        """Every distinct caption, in order."""
        return list(dict.fromkeys(text for captions in self.captions for text in captions))


def decode_all(
    paths: Sequence[Path], transform: ImageTransform, max_pixels: int, progress: DecodeProgress | None = None
) -> tuple[dict[Path, npt.NDArray[np.float32]], dict[Path, str]]:
    """Decode and preprocess every image: (pixels by path, reason by path for those that failed)."""
    pixels: dict[Path, npt.NDArray[np.float32]] = {}
    failed: dict[Path, str] = {}
    for done, path in enumerate(paths, start=1):
        try:
            pixels[path] = apply_transform(transform, load_image(path, max_pixels))
        except BadImageError as error:
            failed[path] = error.reason
        if progress and (done % 64 == 0 or done == len(paths)):
            progress(done, len(paths))
    return pixels, failed


def load_captions(
    path: Path,
    transform: ImageTransform,
    *,
    image_root: Path | None = None,
    split: str | None = "train",
    policy: BadRowPolicy = BadRowPolicy.SKIP,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: DecodeProgress | None = None,
) -> TrainData:
    """Image-caption training data from a Karpathy JSON, CSV or JSONL file (see `evaluation.readers`).

    Args:
        split: keep only rows of this split; rows without a split are always kept. None keeps all.

    Raises:
        DataSetError: bad rows under the STOP policy (each named by file and line), before any training.
        ConfigError: an unreadable file, or no usable rows.
    """
    data = read_pairs(path, image_root, check_images=False)
    pairs = [p for p in data.pairs if split is None or p.split in (None, split)]
    pixels, failed = decode_all(list(dict.fromkeys(p.image for p in pairs)), transform, max_pixels, progress)
    bad = list(data.bad) + [
        BadRow(p.source or path, p.line, f"{p.image}: {failed[p.image]}") for p in pairs if p.image in failed
    ]
    enforce(bad, policy, str(path))
    for row in bad:
        log.warning("skipped %s", row)
    grouped: dict[Path, list[str]] = {}
    for pair in pairs:
        if pair.image not in failed:
            grouped.setdefault(pair.image, []).append(pair.caption)
    if not grouped:
        raise ConfigError(f"{path}: no usable image-caption pairs{f' in split {split!r}' if split else ''}")
    images = list(grouped)
    return TrainData(images, np.stack([pixels[i] for i in images]), [grouped[i] for i in images], skipped=bad)


def load_questions(
    path: Path,
    transform: ImageTransform,
    *,
    image_root: Path | None = None,
    split: str | None = "train",
    policy: BadRowPolicy = BadRowPolicy.SKIP,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: DecodeProgress | None = None,
) -> TrainData:
    """Question-answer training data from a questions JSONL file; the most common answer is the target."""
    data = read_questions(path, image_root, check_images=False)
    return _load_qa(path, data, transform, split, policy, max_pixels, progress, "questions")


def load_statements(
    path: Path,
    transform: ImageTransform,
    *,
    image_root: Path | None = None,
    split: str | None = "train",
    policy: BadRowPolicy = BadRowPolicy.SKIP,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: DecodeProgress | None = None,
) -> TrainData:
    """Visual-entailment training data from a statements CSV / JSONL file: `qa` holds, per image,
    (statement, yes / no / maybe) pairs (see `evaluation.readers.read_statements`)."""
    data = read_statements(path, image_root, check_images=False)
    return _load_qa(path, data, transform, split, policy, max_pixels, progress, "statements")


def _load_qa(
    path: Path,
    data: QuestionSet,
    transform: ImageTransform,
    split: str | None,
    policy: BadRowPolicy,
    max_pixels: int,
    progress: DecodeProgress | None,
    what: str,
) -> TrainData:
    """Decode the images of question rows, apply the bad-row policy, group (text, answer) by image."""
    questions = [q for q in data.questions if split is None or q.split in (None, split)]
    pixels, failed = decode_all(list(dict.fromkeys(q.image for q in questions)), transform, max_pixels, progress)
    bad = list(data.bad) + [
        BadRow(path, q.line, f"{q.image}: {failed[q.image]}") for q in questions if q.image in failed
    ]
    enforce(bad, policy, str(path))
    for row in bad:
        log.warning("skipped %s", row)
    grouped: dict[Path, list[tuple[str, str]]] = {}
    for q in questions:
        if q.image not in failed:
            # ties go to the answer seen first (a set's order would change with the process's hash seed)
            answer = Counter(q.answers).most_common(1)[0][0]
            grouped.setdefault(q.image, []).append((q.question, answer))
    if not grouped:
        raise ConfigError(f"{path}: no usable {what}{f' in split {split!r}' if split else ''}")
    images = list(grouped)
    return TrainData(images, np.stack([pixels[i] for i in images]), qa=[grouped[i] for i in images], skipped=bad)


def attach_negatives(
    data: TrainData,
    path: Path,
    *,
    image_root: Path | None = None,
    policy: BadRowPolicy = BadRowPolicy.SKIP,
) -> int:
    """Read a negatives file (see `evaluation.readers`) into `data.negatives`; returns how many were kept.

    Each negative is paired with the true caption it edits (the row's caption; the image's first
    caption when the row names none). Rows about images outside the training data (another split,
    say) are not used. A row whose negative is one of the image's own captions, or whose caption is
    not, is a bad row.

    Raises:
        DataSetError: bad rows under the STOP policy (each named by file and line), before any training.
        ConfigError: an unreadable file.
    """
    rows = read_negatives(path, image_root)
    position = {image.resolve(): i for i, image in enumerate(data.images)}
    negatives: list[list[tuple[str, str]]] = [[] for _ in data.images]
    bad = list(rows.bad)
    for row in rows.negatives:
        i = position.get(row.image.resolve())
        if i is None:
            continue
        own = data.captions[i]
        if row.negative in own:
            bad.append(BadRow(path, row.line, f"{row.image}: the negative is one of the image's own captions"))
        elif row.edits is not None and row.edits not in own:
            bad.append(BadRow(path, row.line, f"{row.image}: {row.edits!r} is not one of the image's captions"))
        elif (pair := (row.edits or own[0], row.negative)) not in negatives[i]:
            negatives[i].append(pair)
    enforce(bad, policy, str(path))
    for row in bad:
        log.warning("skipped %s", row)
    data.negatives = negatives
    data.skipped.extend(bad)
    return sum(len(n) for n in negatives)


def ranking_texts(
    data: TrainData, rows: Sequence[int], rng: np.random.Generator, ranked: int
) -> tuple[list[int], list[str]]:
    """For a ranking loss against explicit negatives: the batch positions whose image has any, and
    per such image a true caption followed by `ranked` of its false edits (drawn with `rng`)."""
    known = data.negatives
    picked = [j for j, i in enumerate(rows) if known and known[i]]
    texts: list[str] = []
    for j in picked:
        pairs = known[rows[j]]
        caption = pairs[rng.integers(len(pairs))][0]
        false = [negative for true, negative in pairs if true == caption]
        chosen = rng.choice(len(false), size=ranked, replace=len(false) < ranked)
        texts += [caption, *(false[k] for k in chosen)]
    return picked, texts
