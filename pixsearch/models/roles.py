"""One Protocol per model role. Backends implement these; the rest of pixsearch uses only these.

An `Embedding` is a float32 array of shape [n, d] whose rows have unit L2 norm.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from PIL import Image

Embedding = npt.NDArray[np.float32]
Scores = npt.NDArray[np.float32]


class Role(StrEnum):
    DUAL_ENCODER = "dual-encoder"
    RERANKER = "reranker"
    CAPTIONER = "captioner"
    ANSWERER = "answerer"
    ENTAILER = "entailer"
    TAGGER = "tagger"
    PATCH_SCORER = "patch-scorer"
    TEXT_ENCODER = "text-encoder"
    WRITER = "writer"


class Tower(StrEnum):
    """Which parts of a dual encoder `load()` brings into memory."""

    BOTH = "both"
    TEXT = "text"
    IMAGE = "image"


@runtime_checkable
class Model(Protocol):
    """Every backend: a cheap constructor, `load()` (idempotent) loads weights, `close()` frees them."""

    def load(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class DualEncoder(Model, Protocol):
    """Embeds images and texts into one space.

    `transform` is the pure preprocessing (see `pixsearch.models.preprocess.ImageTransform`) that
    turns a PIL image into the model's pixel array; the indexer runs it in worker processes and
    hands the stacked arrays to `encode_pixels`. `preprocess_id` hashes that transform, so stored
    vectors record exactly how they were made.
    """

    @property
    def dim(self) -> int: ...

    @property
    def transform(self) -> Any: ...

    @property
    def preprocess_id(self) -> str: ...

    def load_towers(self, tower: Tower) -> None: ...

    def encode_pixels(self, pixels: npt.NDArray[np.float32]) -> Embedding:
        """pixels float32[n, 3, H, W] -> Embedding[n, d]."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> Embedding: ...

    def encode_texts(self, texts: Sequence[str]) -> Embedding: ...


@runtime_checkable
class Reranker(Model, Protocol):
    """A cross-attention image-text matcher.

    The image side is split off so callers can cache it: `image_features` returns one opaque
    per-image object (a tensor or tuple of tensors, on CPU) and `score_features` scores a query
    against such objects. `score(query, images)` is the two in sequence. Higher means a better match.
    """

    def image_features(self, images: Sequence[Image.Image]) -> list[Any]: ...

    def score_features(self, query: str, features: Sequence[Any]) -> Scores: ...

    def score(self, query: str, images: Sequence[Image.Image]) -> Scores: ...


@runtime_checkable
class Captioner(Model, Protocol):
    def caption(self, images: Sequence[Image.Image]) -> list[str]: ...


@runtime_checkable
class Answerer(Model, Protocol):
    def answer(self, image: Image.Image, question: str, top_k: int = 5) -> list[tuple[str, float]]: ...


@runtime_checkable
class Entailer(Model, Protocol):
    def judge(self, image: Image.Image, statement: str) -> dict[str, float]:
        """-> {'entailment': p, 'neutral': p, 'contradiction': p}, summing to 1."""
        ...


@runtime_checkable
class Tagger(Model, Protocol):
    def tag(self, images: Sequence[Image.Image]) -> list[list[tuple[str, float]]]: ...


@runtime_checkable
class PatchScorer(Model, Protocol):
    """Says which parts of a photo match some words."""

    def patch_scores(self, image: Image.Image, text: str) -> npt.NDArray[np.float32]:
        """-> float32[rows, cols]: the probability that each image patch matches the text."""
        ...


@runtime_checkable
class TextEncoder(Model, Protocol):
    """Text only, into the space of some dual encoder's images (a query model for a library)."""

    @property
    def dim(self) -> int: ...

    def encode_texts(self, texts: Sequence[str]) -> Embedding: ...


@runtime_checkable
class Writer(Model, Protocol):
    """A language model that completes a prompt (a local causal LM, or an OpenAI-compatible server)."""

    def write(self, prompt: str, max_new_tokens: int = 32, timeout_s: float = 30.0) -> str:
        """-> the completion of `prompt`, at most `max_new_tokens` tokens, stopped after about `timeout_s`."""
        ...
