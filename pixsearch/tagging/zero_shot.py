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

Two more rules make the threshold hold on weak models as on strong ones (a weak model's tags are
noise that the per-tag standardisation alone lets through: one demo model gave 95 photos "arena"):

3. Per photo, the tag must beat a fixed background of prompts (`pixsearch.search.relevance`: generic
   captions and unrelated concepts, encoded by the same model, those sharing a word with the tag left
   out) by `prompt_z` of the photo's own spreads. By default `prompt_z` is calibrated on the model:
   the level the background prompts themselves reach against each other (leave one out) on the
   calibration photos, at the same per-photo false-tag rate as `z_min`. A model that cannot tell
   one prompt from another (a random one, or a narrow one before words it never learned) gives
   its tags no more than chance, and so none pass.
4. A tag that passes on more than `max_share` of the calibration photos is suspect and not given.

With labelled photos of the model's own world (a model trained on one narrow world), `prompt_z` can be
fitted instead (`pixsearch.search.relevance.fit_z_min`) and the background made of that world's words.

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
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist

import numpy as np
import numpy.typing as npt
from PIL import Image

from pixsearch.errors import ConfigError
from pixsearch.models.embedding import to_embedding
from pixsearch.models.roles import DualEncoder, Embedding, Tower
from pixsearch.search.relevance import CONCEPTS, GENERIC_PROMPTS, content_words
from pixsearch.tagging.vocabulary import Entry, Vocabulary

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
    # what a tag must beat on each photo (see the module doc): concepts, put into the same prompt
    # templates as the tags, and generic captions as they are
    background: tuple[str, ...] = CONCEPTS
    generic: tuple[str, ...] = GENERIC_PROMPTS
    prompt_z: float | None = None  # by how much; None: calibrated on the model (`chance_level`)
    max_share: float = 0.5  # a tag passing on more of the calibration photos than this is not given
    library_z: bool = True  # also hold each tag to `z_min` over the library's photos

    def check(self) -> None:
        if self.z_min is not None and self.z_min <= 0:
            raise ConfigError(f"z_min must be positive, got {self.z_min}")
        if not 0 < self.false_tags < 1:
            raise ConfigError(f"false_tags must be between 0 and 1, got {self.false_tags}")
        if self.max_tags < 1:
            raise ConfigError(f"max_tags must be at least 1, got {self.max_tags}")
        if self.background_size < 2:
            raise ConfigError(f"background_size must be at least 2, got {self.background_size}")
        if len(self.background) < 3:
            raise ConfigError(f"zero-shot tagging needs at least 3 background concepts, got {len(self.background)}")
        if not 0 < self.max_share <= 1:
            raise ConfigError(f"max_share must be in (0, 1], got {self.max_share}")


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
class Prompts:
    """The background prompts' vectors [p, d]; per tag, which of them are unrelated to it [m, p]; and
    which are concepts rather than generic captions ("a photo"), which describe any photo [p]."""

    vectors: npt.NDArray[np.float32]
    unrelated: npt.NDArray[np.bool_]
    concepts: npt.NDArray[np.bool_]

    @classmethod
    def for_tags(
        cls, vectors: npt.NDArray[np.float32], prompts: Sequence[str], names: Sequence[str], generic: int = 0
    ) -> Prompts:
        """`vectors` [p, d] of `prompts`, the first `generic` of them generic captions."""
        words = [content_words(prompt) for prompt in prompts]
        unrelated = np.asarray([[not (w & content_words(name)) for w in words] for name in names], dtype=bool)
        unrelated[unrelated.sum(axis=1) < 3] = True  # a tag naming nearly every prompt is judged against all
        concepts = np.arange(len(prompts)) >= generic
        return cls(np.asarray(vectors, dtype=np.float32), unrelated, concepts)

    def z_scores(self, images: npt.NDArray[np.float32], tags: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """[n, m]: each tag's similarity to each photo, in spreads above the photo's similarity to the
        prompts unrelated to the tag."""
        against = images @ self.vectors.T  # [n, p]
        weights = self.unrelated.T.astype(np.float64) / self.unrelated.sum(axis=1)  # [p, m]
        mean = against @ weights
        spread = np.sqrt(np.maximum((against**2) @ weights - mean**2, 1e-12))
        return ((images @ tags.T - mean) / spread).astype(np.float32)

    def chance_level(self, images: npt.NDArray[np.float32], quantile: float) -> float:
        """The z a concept prompt reaches against all the others (leave one out) on these photos, at
        `quantile`: how far a thing the photo does not show gets by chance, with this model. A quantile
        further out than the samples reach is taken from a normal fitted to them, if that is higher."""
        against = images @ self.vectors.T
        count = against.shape[1]
        total, squares = against.sum(axis=1, keepdims=True), (against**2).sum(axis=1, keepdims=True)
        mean = (total - against) / (count - 1)
        spread = np.sqrt(np.maximum((squares - against**2) / (count - 1) - mean**2, 1e-12))
        columns = self.concepts if self.concepts.any() else np.ones(count, dtype=bool)
        z = ((against - mean) / spread)[:, columns]
        fitted = float(z.mean() + z.std() * NormalDist().inv_cdf(quantile))
        return max(float(np.quantile(z, quantile)), fitted)


@dataclass(frozen=True)
class Calibration:
    """Per-tag centre and spread of the relative score over a background of photo vectors; the
    prompt threshold; and the tags found suspect (given to too large a share of those photos)."""

    center: npt.NDArray[np.float32]  # [m]
    spread: npt.NDArray[np.float32]  # [m]
    background: int
    prompt_z: float = -np.inf
    suspect: npt.NDArray[np.bool_] | None = None  # [m]

    @classmethod
    def fit(
        cls,
        background: npt.NDArray[np.float32],
        tags: npt.NDArray[np.float32],
        options: ZeroShotOptions,
        prompts: Prompts | None = None,
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
        fitted = cls(center.astype(np.float32), spread.astype(np.float32), int(background.shape[0]))
        if prompts is None:
            return fitted
        prompt_z = options.prompt_z
        if prompt_z is None:
            prompt_z = prompts.chance_level(background, 1.0 - options.false_tags / max(len(tags), 1))
        fitted = replace(fitted, prompt_z=prompt_z)
        share = fitted.passes(background, tags, prompts, options)[0].mean(axis=0)
        suspect = share > options.max_share
        if suspect.any():
            log.info(
                "zero-shot: %d tags pass on over %.0f%% of the photos; not given",
                suspect.sum(),
                100 * options.max_share,
            )
        return replace(fitted, suspect=suspect)

    def z_scores(self, images: npt.NDArray[np.float32], tags: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return (relative_scores(images, tags) - self.center) / self.spread

    def passes(
        self,
        images: npt.NDArray[np.float32],
        tags: npt.NDArray[np.float32],
        prompts: Prompts | None,
        options: ZeroShotOptions,
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32]]:
        """[n, m]: which tags pass every rule on each photo, and by how much (the least margin)."""
        margins = []
        if options.library_z or prompts is None:
            margins.append(self.z_scores(images, tags) - threshold(options, tags.shape[0]))
        if prompts is not None:
            margins.append(prompts.z_scores(images, tags) - self.prompt_z)
        margin = np.minimum.reduce(margins)
        ok = margin >= 0
        if self.suspect is not None:
            ok &= ~self.suspect[None, :]
        return ok, margin.astype(np.float32)


def threshold(options: ZeroShotOptions, tags: int) -> float:
    """`z_min`, or the z a photo without any of `tags` tags passes for `false_tags` of them on average:
    the (1 - false_tags / tags) quantile of the standard normal (a Bonferroni bound; 4.1 for the
    2,800 built-in tags, 3.1 for 50)."""
    if options.z_min is not None:
        return options.z_min
    return NormalDist().inv_cdf(1.0 - options.false_tags / max(tags, 1))


def select(
    ok: npt.NDArray[np.bool_], margin: npt.NDArray[np.float32], names: Sequence[str], options: ZeroShotOptions
) -> list[list[tuple[str, float]]]:
    """Per photo: the tags that pass, best first, at most max_tags, scored logistic(margin): 0.5 at the threshold."""
    out: list[list[tuple[str, float]]] = []
    for row_ok, row in zip(ok, margin, strict=True):
        hits = np.flatnonzero(row_ok)
        hits = hits[np.argsort(-row[hits], kind="stable")][: options.max_tags]
        out.append([(names[j], round(float(1.0 / (1.0 + np.exp(-row[j]))), 4)) for j in hits])
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
        self._prompts: Prompts | None = None

    def load(self) -> None:
        """Encode (or read from the cache) the tags' vectors, and encode the background prompts."""
        if self._tags is None:
            self._tags = cached_text_vectors(self.encoder, self.vocabulary, self.cache, self.options.text_batch)
        if self._prompts is None:
            self.encoder.load_towers(Tower.TEXT)
            generic = self.encoder.encode_texts(list(self.options.generic)) if self.options.generic else None
            concepts = Vocabulary(tuple(Entry(concept, "mass") for concept in self.options.background))
            vectors = ensemble_text_vectors(self.encoder, concepts, self.options.text_batch)
            if generic is not None:
                vectors = np.concatenate([generic, vectors])
            names = (*self.options.generic, *self.options.background)
            self._prompts = Prompts.for_tags(vectors, names, self.vocabulary.names, len(self.options.generic))

    def close(self) -> None:
        self._tags = None
        self._prompts = None

    @property
    def prompts(self) -> Prompts:
        if self._prompts is None:
            self.load()
        assert self._prompts is not None
        return self._prompts

    @property
    def tag_matrix(self) -> Embedding:
        if self._tags is None:
            self.load()
        assert self._tags is not None
        return self._tags

    def calibrate(self, background: npt.NDArray[np.float32]) -> Calibration:
        self.calibration = Calibration.fit(
            np.asarray(background, dtype=np.float32), self.tag_matrix, self.options, self.prompts
        )
        return self.calibration

    def tag_vectors(self, vectors: npt.NDArray[np.float32]) -> list[list[tuple[str, float]]]:
        """Tags of photos given their (unit) vectors from the same encoder; calibrates on them if not yet done."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.tag_matrix.shape[1]:
            raise ConfigError(f"photo vectors of shape {vectors.shape} do not fit tag vectors {self.tag_matrix.shape}")
        if self.calibration is None:
            self.calibrate(vectors)
        assert self.calibration is not None
        ok, margin = self.calibration.passes(vectors, self.tag_matrix, self.prompts, self.options)
        return select(ok, margin, self.vocabulary.names, self.options)

    def tag(self, images: Sequence[Image.Image]) -> list[list[tuple[str, float]]]:
        return self.tag_vectors(self.encoder.encode_images(images))
