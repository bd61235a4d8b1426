"""Whether a photo is relevant to a query, judged on that photo alone.

A cut-off on the query's similarity to the library (keep what is `z` spreads above the library's
mean) depends on what else is in the library: when a query matches much of it ("people" in a family
library), the matches raise the mean and spread and the true hits fall below the line. Here each
candidate photo is judged against the query itself:

    z = (sim(query, photo) - mean_j sim(prompt_j, photo)) / std_j sim(prompt_j, photo)

over a fixed *background* of prompts encoded by the same text model: generic captions ("a photo",
"an image of something") and concepts unrelated to the query (prompts sharing a word with the query
are left out). A photo is kept when the query describes it `z_min` spreads better than the background
does. Nothing here looks at any other photo, so adding or removing photos never moves the line;
only the candidates' stored vectors are read (no scan of the library per query).

The background has to be made of things the model knows: a model trained on one narrow world
(the synthetic shapes of `pixsearch.synth`) knows only that world's words, and should be judged
against them (`Background(prompts=...)`), with a `z_min` fitted on photos whose truth is known
(`fit_z_min`). Such a calibration ships with the model: `relevance.json` in a local model folder
(`Background.write`), read by `Background.of_model`. The defaults are for general-purpose models
(CLIP, SigLIP) on everyday photos.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pixsearch.errors import ConfigError
from pixsearch.models.spec import ModelSpec

log = logging.getLogger(__name__)

GENERIC_PROMPTS = (
    "a photo",
    "a picture",
    "an image",
    "an image of something",
    "a photo of something",
    "something",
)
# Everyday concepts far from each other, so that together they stand for "anything else".
CONCEPTS = (
    "a dog", "a cat", "a horse", "a bird", "a fish", "an insect", "a tree", "a flower", "grass", "a mountain",
    "the sea", "a beach", "a river", "snow", "the sky", "a city street", "a building", "a bridge", "a house",
    "a room", "a kitchen", "a car", "a bicycle", "a train", "a boat", "an aeroplane", "a road", "a person",
    "a child", "a crowd", "a face", "a hand", "food", "a cake", "fruit", "a drink", "a table", "a chair",
    "a book", "a computer", "a phone", "a clock", "a lamp", "a ball", "a toy", "a shoe", "a shirt", "a bag",
    "a painting", "text", "a sign", "a map", "a screenshot", "a document", "a pattern", "a texture",
    "fire", "water", "night", "rain",
)  # fmt: skip
CONCEPT_PROMPTS = tuple(f"a photo of {concept}" for concept in CONCEPTS)
DEFAULT_PROMPTS = GENERIC_PROMPTS + CONCEPT_PROMPTS
DEFAULT_Z_MIN = 2.5  # general models on everyday photos: a true concept stands ~3-5 spreads out, noise rarely 2.5
CALIBRATION_FILE = "relevance.json"  # in a model's folder: {"background": [...], "z_min": ...}
_STOPWORDS = frozenset("a an and are as at be by for from in is it of on or the to with photo picture image".split())
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Background:
    """The prompts photos are judged against, and how far above them a relevant query must be."""

    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    z_min: float = DEFAULT_Z_MIN

    def __post_init__(self) -> None:
        if len(self.prompts) < 3:
            raise ConfigError(f"a relevance background needs at least 3 prompts, got {len(self.prompts)}")

    @classmethod
    def of_model(cls, spec: str) -> Background | None:
        """The calibration that ships with a model in a local folder (its `relevance.json`), if any.

        Raises:
            ConfigError: the file is there but unreadable or malformed (names it).
        """
        folder = Path(ModelSpec.parse(spec).source).expanduser()
        path = folder / CALIBRATION_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(tuple(str(p) for p in data["background"]), float(data["z_min"]))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"relevance calibration {path} is unreadable: {error}") from None

    def write(self, model_folder: Path) -> Path:
        """Save as the calibration of the model in `model_folder` (see `of_model`)."""
        path = Path(model_folder) / CALIBRATION_FILE
        path.write_text(json.dumps({"background": list(self.prompts), "z_min": self.z_min}, indent=2) + "\n")
        return path

    def unrelated_to(self, query: str) -> npt.NDArray[np.bool_]:
        """Which prompts share no content word with `query` (a prompt naming the query's own thing is
        no background for it)."""
        words = content_words(query)
        return np.asarray([not (content_words(prompt) & words) for prompt in self.prompts], dtype=bool)


def read_prompts(path: Path) -> tuple[str, ...]:
    """Background prompts from a text file, one a line (blank lines and # comments ignored).

    Raises:
        ConfigError: the file cannot be read, or holds fewer than 3 prompts.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"background prompts file {path} cannot be read: {error}") from None
    prompts = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    return Background(prompts).prompts


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def z_scores(
    query: npt.NDArray[np.float32], photos: npt.NDArray[np.float32], background: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Per photo [n]: how many of its own background spreads the query's similarity is above the
    mean of its similarities to the background prompts [m, d]."""
    if photos.ndim != 2 or background.ndim != 2 or not photos.shape[1] == background.shape[1] == query.shape[-1]:
        raise ConfigError(
            f"relevance needs photos [n, d], background [m, d] and a query [d]; got {photos.shape}, "
            f"{background.shape} and {query.shape}"
        )
    if background.shape[0] < 2:
        raise ConfigError(f"relevance needs at least 2 background prompts, got {background.shape[0]}")
    against = photos @ background.T
    spread = np.maximum(against.std(axis=1), 1e-6)
    return ((photos @ query - against.mean(axis=1)) / spread).astype(np.float32)


def fit_z_min(z: Iterable[float], relevant: Iterable[bool]) -> float:
    """The `z_min` that best separates photos known to show a concept from photos known not to
    (highest balanced accuracy; the middle of the gap between the two sides at that point).

    Raises:
        ConfigError: no relevant or no irrelevant example.
    """
    values = np.asarray(list(z), dtype=np.float64)
    truth = np.asarray(list(relevant), dtype=bool)
    if truth.all() or not truth.any():
        raise ConfigError("fitting z_min needs photos that show the concept and photos that do not")
    cuts = np.unique(values)
    candidates = np.concatenate([[cuts[0] - 1.0], (cuts[:-1] + cuts[1:]) / 2, [cuts[-1] + 1.0]])
    kept = values[None, :] >= candidates[:, None]
    accuracy = kept[:, truth].mean(axis=1) + (~kept[:, ~truth]).mean(axis=1)
    return float(candidates[int(np.argmax(accuracy))])


def calibrate(
    encode_texts: Callable[[list[str]], npt.NDArray[np.float32]],
    photos: npt.NDArray[np.float32],
    concepts: Sequence[str],
    shows: npt.NDArray[np.bool_],
    prompts: Sequence[str],
) -> Background:
    """A model's calibration from photos whose truth is known: `photos` [n, d] (the model's vectors),
    `shows` [n, c] whether each photo shows each of `concepts`; `prompts` the background (words of
    the model's world). z_min is fitted on every (photo, concept) pair (`fit_z_min`).
    """
    background = Background(tuple(prompts))
    vectors = encode_texts(list(prompts))
    queries = encode_texts(list(concepts))
    z = [z_scores(q, photos, vectors[background.unrelated_to(c)]) for q, c in zip(queries, concepts, strict=True)]
    return Background(background.prompts, fit_z_min(np.stack(z, axis=1).ravel(), np.asarray(shows).ravel()))


def judge(
    similarities: Sequence[float], z: Sequence[float], z_min: float | None, min_score: float | None
) -> list[bool]:
    """Which candidates pass: z at least `z_min` (when set) and similarity at least `min_score` (when set)."""
    return [
        (z_min is None or zi >= z_min) and (min_score is None or si >= min_score)
        for si, zi in zip(similarities, z, strict=True)
    ]
