"""Zero-shot tags: the library's dual encoder scores every vocabulary tag against a photo's vector.

Raw cosine similarities are not comparable across tags or across photos: some prompts ("a photo of
a person") sit close to almost every photo, and some photos sit close to almost every prompt. A fixed
threshold on raw similarity therefore gives hub tags to everything and real tags to nothing. The
calibration here normalises both ways:

1. Per photo: subtract the photo's mean similarity over the whole vocabulary. What is left is the
   tag's logit relative to the photo's average, the quantity the encoder's contrastive softmax
   compares across tags (a softmax is unchanged by a per-photo constant).
2. Per tag: standardise that relative score against a background of photo vectors, by default a
   sample of the library's own stored vectors: z = (r - centre) / spread, where centre and spread are
   the median and 1.4826 * MAD of the background after iterative 2.5-sigma clipping (the way an
   astronomer estimates the sky under the stars). The photos that do show a tag are its "stars": the
   clipping removes them, so the background describes the library's photos without the tag even when
   a good share of the library (up to about a third, in tests) shows it.

A tag fits a photo when z >= `z_min` and it is among the photo's `max_tags` best. A photo is tested
against every tag of the vocabulary, so the threshold must grow with its size: by default it is set
so that a photo showing none of the tags gets on average `false_tags` = 0.05 tags, were z standard
normal (a Bonferroni bound: z_min = 4.1 for the 2,800 built-in tags, 3.1 for a 50-tag vocabulary).
The spread of a tag is floored at `spread_floor` times the median spread of all tags, so a tag on
which the background happens to agree closely cannot fire on noise. The stored score is a logistic
of z - z_min: 0.5 at the threshold, near 1 far above it.

The background is what makes the threshold mean something: fitted on the library, "beach" is given to
the photos that are far more beach-like than the library's typical photo; a library where most
photos are beaches gets it only on the clearest ones (or, past about half, on none: lower `z_min`
or tag with the ImageNet tagger there). Without a library, the photos being tagged are
their own background (fine for a batch of dozens, meaningless for one photo).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import numpy.typing as npt
from PIL import Image

from pixsearch.errors import ConfigError
from pixsearch.models.embedding import to_embedding
from pixsearch.models.roles import DualEncoder, Embedding, Tower
from pixsearch.tagging.vocabulary import Vocabulary

log = logging.getLogger(__name__)

MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution is 0.6745 sigma


@dataclass(frozen=True)
class ZeroShotOptions:
    """`z_min` None: derived from the vocabulary size so that a photo gets on average `false_tags`
    tags that do not fit (see `threshold`)."""

    z_min: float | None = None
    false_tags: float = 0.05
    max_tags: int = 10
    background_size: int = 4096  # photo vectors sampled for the calibration
    spread_floor: float = 0.5  # smallest tag spread, as a fraction of the median spread
    clip: float = 2.5  # background estimation leaves out photos this many spreads from a tag's centre
    min_background: int = 16  # fewer background photos than this: tags are logged as unreliable
    text_batch: int = 256

    def check(self) -> None:
        if self.z_min is not None and self.z_min <= 0:
            raise ConfigError(f"z_min must be positive, got {self.z_min}")
        if not 0 < self.false_tags < 1:
            raise ConfigError(f"false_tags must be between 0 and 1, got {self.false_tags}")
        if self.max_tags < 1:
            raise ConfigError(f"max_tags must be at least 1, got {self.max_tags}")
        if self.background_size < 2:
            raise ConfigError(f"background_size must be at least 2, got {self.background_size}")


def ensemble_text_vectors(encoder: DualEncoder, vocabulary: Vocabulary, batch: int = 256) -> Embedding:
    """One unit vector per tag: the normalised mean of its prompts' text vectors."""
    encoder.load_towers(Tower.TEXT)
    prompts: list[str] = []
    owners: list[int] = []
    for index, entry in enumerate(vocabulary.entries):
        for prompt in entry.prompts():
            prompts.append(prompt)
            owners.append(index)
    parts = [encoder.encode_texts(prompts[start : start + batch]) for start in range(0, len(prompts), batch)]
    vectors = np.concatenate(parts, axis=0)
    sums = np.zeros((len(vocabulary), vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, np.asarray(owners), vectors)
    return to_embedding(sums, source=f"{getattr(encoder, 'spec', 'encoder')} prompt ensemble")


def cached_text_vectors(encoder: DualEncoder, vocabulary: Vocabulary, cache: Path | None, batch: int) -> Embedding:
    """`ensemble_text_vectors`, kept in `cache` (a .npy path naming model and vocabulary) when given."""
    if cache is not None and cache.exists():
        try:
            vectors = np.load(cache, allow_pickle=False)
            if vectors.shape[0] == len(vocabulary) and vectors.dtype == np.float32:
                return vectors
        except (OSError, ValueError) as error:
            log.warning("tag vector cache %s unreadable (%s); encoding again", cache, error)
    vectors = ensemble_text_vectors(encoder, vocabulary, batch)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=cache.name + ".", suffix=".tmp", dir=cache.parent)
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, vectors)
        os.replace(tmp, cache)
    return vectors


def relative_scores(images: npt.NDArray[np.float32], tags: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Cosine similarities [n, m] minus each photo's mean over the vocabulary."""
    scores = images @ tags.T
    return scores - scores.mean(axis=1, keepdims=True)


def clipped_center_spread(
    values: npt.NDArray[np.float32], clip: float, rounds: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Per column: median and 1.4826 * MAD, re-estimated `rounds` times without the values more than
    `clip` spreads from the centre (iterative sigma clipping, as sky backgrounds are estimated under
    stars): the photos that do show a tag stop pulling its background up."""
    keep = np.ones(values.shape, dtype=bool)
    for _ in range(rounds):
        masked = np.where(keep, values, np.nan)
        center = np.nanmedian(masked, axis=0)
        spread = MAD_TO_SIGMA * np.nanmedian(np.abs(masked - center), axis=0)
        updated = np.abs(values - center) <= clip * np.maximum(spread, 1e-12)
        if np.array_equal(updated, keep):
            break
        keep = updated
    return center, spread


@dataclass(frozen=True)
class Calibration:
    """Per-tag centre and spread of the relative score over a background of photo vectors."""

    center: npt.NDArray[np.float32]  # [m]
    spread: npt.NDArray[np.float32]  # [m]
    background: int

    @classmethod
    def fit(
        cls, background: npt.NDArray[np.float32], tags: npt.NDArray[np.float32], options: ZeroShotOptions
    ) -> Calibration:
        """Fit on up to `options.background_size` photo vectors (an even sample of `background`).

        Raises:
            ConfigError: fewer than two background vectors.
        """
        if background.shape[0] < 2:
            raise ConfigError(f"zero-shot calibration needs at least 2 photo vectors, got {background.shape[0]}")
        if background.shape[0] > options.background_size:
            # an evenly spaced sample: deterministic, and spread over the whole library
            picks = np.linspace(0, background.shape[0] - 1, options.background_size).round().astype(np.int64)
            background = background[picks]
        if background.shape[0] < options.min_background:
            log.warning(
                "zero-shot calibration on only %d photos; tags are unreliable until the library is larger",
                background.shape[0],
            )
        center, spread = clipped_center_spread(relative_scores(background, tags), options.clip)
        floor = max(float(np.median(spread)) * options.spread_floor, 1e-6)
        spread = np.maximum(spread, floor)
        return cls(center.astype(np.float32), spread.astype(np.float32), int(background.shape[0]))

    def z_scores(self, images: npt.NDArray[np.float32], tags: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return (relative_scores(images, tags) - self.center) / self.spread


def threshold(options: ZeroShotOptions, tags: int) -> float:
    """`z_min`, or the z a photo without any of `tags` tags passes for `false_tags` of them on average:
    the (1 - false_tags / tags) quantile of the standard normal (a Bonferroni bound; 4.1 for the
    2,800 built-in tags, 3.1 for 50)."""
    if options.z_min is not None:
        return options.z_min
    return NormalDist().inv_cdf(1.0 - options.false_tags / max(tags, 1))


def select(z: npt.NDArray[np.float32], names: Sequence[str], options: ZeroShotOptions) -> list[list[tuple[str, float]]]:
    """Per photo: the tags with z >= the threshold, best first, at most max_tags, scored logistic(z - threshold)."""
    z_min = threshold(options, len(names))
    out: list[list[tuple[str, float]]] = []
    for row in z:
        hits = np.flatnonzero(row >= z_min)
        hits = hits[np.argsort(-row[hits], kind="stable")][: options.max_tags]
        out.append([(names[j], round(float(1.0 / (1.0 + np.exp(z_min - row[j]))), 4)) for j in hits])
    return out


class ZeroShotTagger:
    """The `Tagger` role over a dual encoder and a vocabulary.

    `calibrate(vectors)` fits the per-tag background (the service passes the library's stored
    vectors); `tag_vectors` tags photos from vectors already made, `tag` from images.
    """

    def __init__(
        self,
        encoder: DualEncoder,
        vocabulary: Vocabulary,
        options: ZeroShotOptions | None = None,
        cache: Path | None = None,
    ) -> None:
        self.encoder = encoder
        self.vocabulary = vocabulary
        self.options = options or ZeroShotOptions()
        self.options.check()
        self.cache = cache
        self.calibration: Calibration | None = None
        self._tags: Embedding | None = None

    def load(self) -> None:
        if self._tags is None:
            self._tags = cached_text_vectors(self.encoder, self.vocabulary, self.cache, self.options.text_batch)

    def close(self) -> None:
        self._tags = None

    @property
    def tag_matrix(self) -> Embedding:
        self.load()
        assert self._tags is not None
        return self._tags

    def calibrate(self, background: npt.NDArray[np.float32]) -> Calibration:
        self.calibration = Calibration.fit(np.asarray(background, dtype=np.float32), self.tag_matrix, self.options)
        return self.calibration

    def tag_vectors(self, vectors: npt.NDArray[np.float32]) -> list[list[tuple[str, float]]]:
        """Tags of photos given their (unit) vectors from the same encoder; calibrates on them if not yet done."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.tag_matrix.shape[1]:
            raise ConfigError(f"photo vectors of shape {vectors.shape} do not fit tag vectors {self.tag_matrix.shape}")
        if self.calibration is None:
            self.calibrate(vectors)
        assert self.calibration is not None
        return select(self.calibration.z_scores(vectors, self.tag_matrix), self.vocabulary.names, self.options)

    def tag(self, images: Sequence[Image.Image]) -> list[list[tuple[str, float]]]:
        return self.tag_vectors(self.encoder.encode_images(images))
